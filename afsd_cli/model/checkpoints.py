"""Load and save AFSD weights in the official checkpoint layout (``save_model`` in ``AFSD/thumos14/train.py``).

Official ``.ckpt`` files are a bare ``OrderedDict[str, Tensor]`` of 442 entries keyed like
``coarse_pyramid_detection.pyramids.0.0.conv3d.weight`` and ``backbone._model.Mixed_5c.b0.bn.bias``.
Reading accepts that, a dict holding it under ``"model"`` or ``"state_dict"``, and keys with the
``module.`` prefix DataParallel/DDP adds (or ``_orig_mod.`` from ``torch.compile``). Files are read with ``weights_only=True``: a checkpoint
can never run code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from afsd_cli.errors import CheckpointError

_WRAPPER_KEYS = ("model", "state_dict")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile
_SHOWN = 5


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (bare or wrapped, with or without ``module.``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt / non-weights files
        raise CheckpointError(f"cannot read checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", path)
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError("not a state dict (expected a mapping of names to tensors)", path)
    for prefix in _WRAPPER_PREFIXES:
        if obj and all(key.startswith(prefix) for key in obj):
            obj = {key[len(prefix):]: value for key, value in obj.items()}
    return dict(obj)


def _describe(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True) -> list[str]:
    """Problems that would stop ``state`` loading into ``model`` (empty list when it fits)."""
    expected = model.state_dict()
    problems = []
    shapes = [
        f"{key}: {tuple(state[key].shape)} in file vs {tuple(value.shape)} in model"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    if shapes:
        problems.append("shape mismatch: " + _describe(shapes))
    if strict:
        missing = [key for key in expected if key not in state]
        unexpected = [key for key in state if key not in expected]
        if missing:
            problems.append(f"{len(missing)} missing keys: " + _describe(missing))
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: " + _describe(unexpected))
    return problems


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load weights from ``path`` into ``model`` (in place); CheckpointError when they don't fit.

    The message names the file, the first few missing/unexpected keys and shape mismatches,
    e.g. an RGB checkpoint given to a flow model, or an ActivityNet one to a THUMOS14 model.
    """
    state = read_state_dict(path)
    problems = check_state_dict(model, state, strict=strict)
    if problems:
        raise CheckpointError("checkpoint does not match the model architecture: " + "; ".join(problems), path)
    model.load_state_dict(state, strict=strict)
    return model


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write the bare state dict (official key names, no ``module.`` prefix) atomically."""
    from afsd_cli.io import save_torch

    inner = model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model
    state = {key: value.detach().cpu() for key, value in inner.state_dict().items()}
    return save_torch(path, state)
