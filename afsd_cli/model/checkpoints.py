"""Load and save AFSD weights in the official checkpoint layout (``save_model`` in ``AFSD/thumos14/train.py``).

Official ``.ckpt`` files are a bare ``OrderedDict[str, Tensor]`` of 442 entries keyed like
``coarse_pyramid_detection.pyramids.0.0.conv3d.weight`` and ``backbone._model.Mixed_5c.b0.bn.bias``.
Reading accepts that, a dict holding it under ``"model"`` or ``"state_dict"``, and keys with the
``module.`` prefix DataParallel/DDP adds (or ``_orig_mod.`` from ``torch.compile``). Files are read
with ``weights_only=True``: a checkpoint can never run code.

Whether the weights fit a model is decided by PyTorch's own ``load_state_dict``, as in the official
``test.py`` (``net.load_state_dict(torch.load(path))``): whatever it accepts loads here too (a
1-element tensor for a 0-D ``num_batches_tracked``, a BatchNorm state without that counter in files
from PyTorch < 0.4.1). Only its refusals are reworded: the file, the first keys, both shapes.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from afsd_cli.errors import AFSDError, CheckpointError

_WRAPPER_KEYS = ("model", "state_dict")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile
_SHOWN = 5

# the first bytes of the two formats torch.save writes (zip since PyTorch 1.6, pickle before)
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = b"\x80"
_NUMPY_MAGIC = b"\x93NUMPY"

# PyTorch's load_state_dict error lines (torch/nn/modules/module.py, Module.load_state_dict)
_SIZE_MISMATCH = re.compile(
    r"size mismatch for (?P<key>\S+): copying a param with shape torch\.Size\(\[(?P<file>[^\]]*)\]\) "
    r"from checkpoint, the shape in current model is torch\.Size\(\[(?P<model>[^\]]*)\]\)")
_KEY_LIST = re.compile(r"(?P<kind>Missing|Unexpected) key\(s\) in state_dict: (?P<keys>.*)")
_QUOTED = re.compile(r'"([^"]*)"')


def read_torch_file(path: str | Path, error: type[AFSDError] = CheckpointError) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``error`` with a short reason otherwise.

    The reason never repeats PyTorch's advice to load with ``weights_only=False``: a file
    that needs it may run code, and is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise error("file not found" if not path.exists() else "not a file", path)
    _check_torch_format(path, error)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt / non-weights files
        raise error(_load_failure_reason(exc), path) from None


def _check_torch_format(path: Path, error: type[AFSDError]) -> None:
    with path.open("rb") as stream:
        head = stream.read(len(_NUMPY_MAGIC))
    if not head:
        raise error("empty file (0 bytes): not a checkpoint", path)
    if head.startswith(_NUMPY_MAGIC):
        raise error("this is a NumPy .npy array, not a PyTorch checkpoint", path)
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTOCOL_OPCODE)):
        raise error("not a PyTorch checkpoint (neither the zip nor the legacy format torch.save writes)", path)


def _load_failure_reason(exc: Exception) -> str:
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (f"refused: the file holds Python objects besides tensors (e.g. {found.group(1).rstrip('.')!r}), "
                "which could run code when loaded; or it is corrupt")
    if isinstance(exc, EOFError) or "failed finding central directory" in text or "Ran out of input" in text:
        return "truncated or corrupt checkpoint (the file ends before its data does)"
    if "Weights only load failed" in text or "PytorchStreamReader" in text:
        return "corrupt checkpoint (PyTorch cannot decode it)"
    first_line = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"cannot read the checkpoint ({type(exc).__name__}{': ' + first_line if first_line else ''})"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (bare or wrapped, with or without ``module.``).

    The returned ``OrderedDict`` keeps the file's ``_metadata`` (module versions), which
    ``load_state_dict`` consults, e.g. to accept BatchNorm states saved without counters.
    """
    path = Path(path)
    obj = read_torch_file(path)
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError("not a state dict (expected a mapping of names to tensors)", path)
    for prefix in _WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in obj):
            return strip_prefix(obj, prefix)
    return strip_prefix(obj, "")


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str, keep_others: bool = True) -> OrderedDict:
    """``state`` with ``prefix`` removed from its keys (and from its ``_metadata`` module names).

    ``keep_others=False`` drops the keys without the prefix.
    """
    stripped = OrderedDict(
        (key.removeprefix(prefix), value) for key, value in state.items() if keep_others or key.startswith(prefix))
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        module = prefix.removesuffix(".")
        stripped._metadata = OrderedDict(
            (name.removeprefix(prefix) if name != module else "", value)
            for name, value in metadata.items() if keep_others or name == module or name.startswith(prefix))
    return stripped


def first_non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    """The first key whose floating-point tensor holds a NaN or an infinity (None when all finite)."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def refuse_non_finite(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """CheckpointError naming the first non-finite tensor: such weights would give NaN scores,
    which every later step drops, so each video would silently get no detections."""
    bad = first_non_finite(state)
    if bad is not None:
        count = sum(1 for v in state.values() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
        more = f" (and {count - 1} more tensors)" if count > 1 else ""
        raise CheckpointError(f"non-finite weights (NaN or inf) in {bad}{more}: the model would detect nothing", path)


def load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, strict: bool = True,
                 what: str = "checkpoint does not match the model architecture"):
    """``module.load_state_dict(state, strict)``; its refusal becomes a CheckpointError.

    Returns PyTorch's ``(missing_keys, unexpected_keys)`` result.
    """
    try:
        return module.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"{what}: {describe_load_error(str(exc))}", path) from None


def describe_load_error(text: str) -> str:
    """PyTorch's multi-line ``load_state_dict`` error as one line: shapes, then missing, unexpected."""
    shapes = [f"{m['key']}: ({m['file']}) in file vs ({m['model']}) in model" for m in _SIZE_MISMATCH.finditer(text)]
    # Two shapes at most: a message is capped (errors.MAX_MESSAGE_CHARS) and the key lists must fit.
    problems = ["shape mismatch: " + _describe(shapes, shown=2)] if shapes else []
    for kind in ("Missing", "Unexpected"):
        for match in _KEY_LIST.finditer(text):
            if match["kind"] == kind:
                keys = _QUOTED.findall(match["keys"])
                problems.append(f"{len(keys)} {kind.lower()} keys: " + _describe(keys))
    if problems:
        return "; ".join(problems)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else "load_state_dict failed")[:300]


def _describe(keys: list[str], shown: int = _SHOWN) -> str:
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load weights from ``path`` into ``model`` (in place); CheckpointError when they don't fit.

    The message names the file, the first few missing/unexpected keys and shape mismatches,
    e.g. an RGB checkpoint given to a flow model, or an ActivityNet one to a THUMOS14 model.
    Non-finite weights are refused before anything is copied; on a mismatch PyTorch may already
    have copied the tensors that fit, so a model that raised should be discarded.
    """
    state = read_state_dict(path)
    refuse_non_finite(state, path)
    load_weights(model, state, path, strict=strict)
    model.checkpoint_path = str(path)  # lets a later failure (non-finite outputs) name the file
    return model


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write the bare state dict (official key names, no ``module.`` prefix) atomically."""
    from afsd_cli.io import save_torch

    inner = model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model
    state = {key: value.detach().cpu() for key, value in inner.state_dict().items()}
    return save_torch(path, state)
