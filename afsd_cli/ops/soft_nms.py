"""Gaussian soft-NMS with the behaviour of the official ``softnms_v2``
(``AFSD/common/segment_utils.py``), three ways:

* the C loop of ``csrc/soft_nms/soft_nms.c`` through ctypes (built on first use by
  :mod:`afsd_cli.ops.native`; 2.5-9x faster than NumPy, see benchmarks/results_infer.md);
* :func:`soft_nms_numpy`, the same float32 operations in NumPy (without a C compiler);
* :func:`soft_nms_torch`, PyTorch operations, bit-identical to the official function.

``$AFSD_SOFTNMS_BACKEND``: ``auto`` (default: native if it builds, else NumPy), ``native`` (fail if
it cannot be used) or ``numpy``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from afsd_cli.errors import AFSDError
from afsd_cli.ops.backends import choose_backend

SOFTNMS_BACKEND_ENV = "AFSD_SOFTNMS_BACKEND"
BACKENDS = ("auto", "native", "numpy")


def _native_soft_nms() -> tuple[Any, str | None]:
    """``csrc/soft_nms/soft_nms.c`` through ctypes, built on first use: ``(library, None)`` or
    ``(None, why not)``."""
    import ctypes

    from afsd_cli.ops.native import try_load_library

    library, error = try_load_library("soft_nms/soft_nms.c", "afsd_soft_nms")
    if library is not None and library.afsd_soft_nms.argtypes is None:  # declared once
        P, I, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        library.afsd_soft_nms.argtypes = [P, P, P, I, F, I, F, I, P, P]
        library.afsd_soft_nms.restype = I
    return library, error


def soft_nms_backend() -> tuple[str, str]:
    """``(backend, detail)`` that :func:`soft_nms` uses under ``$AFSD_SOFTNMS_BACKEND``."""
    requested = choose_backend(SOFTNMS_BACKEND_ENV, BACKENDS)
    if requested == "numpy":
        return "numpy", f"${SOFTNMS_BACKEND_ENV}=numpy"
    library, error = _native_soft_nms()
    if library is not None:
        return "native", f"C loop via ctypes: {library._name}"
    if requested == "native":
        raise AFSDError(f"${SOFTNMS_BACKEND_ENV}=native but the native soft-NMS is unavailable: {error}")
    return "numpy", f"native soft-NMS unavailable: {error}"


def soft_nms(candidates: Any, sigma: float = 0.5, top_k: int = 1000,
             score_threshold: float = 0.001, emit_last: bool = False) -> np.ndarray:
    """Gaussian soft-NMS with the behaviour of the official ``softnms_v2``.

    ``candidates [M, 3]`` rows ``(start, end, score)`` (array or tensor, used as float32).
    Returns the kept rows ``[N, 3]`` (float32) in their original order with their decayed
    scores. Repeatedly the best remaining candidate (lowest index on ties) is kept and every
    other remaining candidate's score is multiplied by ``exp(-IoU² / sigma)``; candidates below
    ``score_threshold`` are dropped. The official loop stops while *one* candidate is left and
    never keeps it (so a single candidate yields nothing); ``emit_last=True`` keeps it (a fix,
    not the official numbers).

    Runs the C loop of ``csrc/soft_nms`` (2.5-9x faster than NumPy, see
    benchmarks/results_infer.md) or, without a C compiler, :func:`soft_nms_numpy`. Both do the
    official float32 operations in the same order; only ``exp`` differs from PyTorch's (≤ 1 ulp).
    :func:`soft_nms_torch` is the bit-exact PyTorch variant.
    """
    if isinstance(candidates, torch.Tensor):
        candidates = candidates.detach().cpu().numpy()
    candidates = np.asarray(candidates, dtype=np.float32)
    if soft_nms_backend()[0] == "numpy":
        return soft_nms_numpy(candidates, sigma, top_k, score_threshold, emit_last)
    return _soft_nms_native(candidates, sigma, top_k, score_threshold, emit_last)


def _soft_nms_native(candidates: np.ndarray, sigma: float, top_k: int, score_threshold: float,
                     emit_last: bool) -> np.ndarray:
    """:func:`soft_nms` through the C loop: float32 ``[M, 3]`` in, kept rows in index order out."""
    start = np.ascontiguousarray(candidates[:, 0])
    end = np.ascontiguousarray(candidates[:, 1])
    score = np.ascontiguousarray(candidates[:, 2]).copy()
    n = len(score)
    kept = np.empty(max(min(top_k, n), 1), np.int64)
    scratch = np.empty(max(n, 1), np.int32)
    library = _native_soft_nms()[0]
    count = library.afsd_soft_nms(start.ctypes.data, end.ctypes.data, score.ctypes.data, n, sigma,
                                  max(int(top_k), 0), score_threshold, int(emit_last),
                                  kept.ctypes.data, scratch.ctypes.data)
    order = np.sort(kept[:count])
    return np.stack([start[order], end[order], score[order]], axis=-1).reshape(-1, 3)


def soft_nms_numpy(candidates: Any, sigma: float = 0.5, top_k: int = 1000,
                   score_threshold: float = 0.001, emit_last: bool = False) -> np.ndarray:
    """:func:`soft_nms` in NumPy: the official float32 operations on the compacted remaining
    candidates; only ``exp`` comes from NumPy instead of PyTorch (≤ 1 ulp apart)."""
    if isinstance(candidates, torch.Tensor):
        candidates = candidates.detach().cpu().numpy()
    candidates = np.asarray(candidates, dtype=np.float32)
    start = np.ascontiguousarray(candidates[:, 0])
    end = np.ascontiguousarray(candidates[:, 1])
    score = candidates[:, 2].copy()
    sigma32, min_width, zero = np.float32(sigma), np.float32(1e-5), np.float32(0.0)
    remaining = np.flatnonzero(score >= score_threshold)
    kept: list[int] = []
    while remaining.size > 1 and len(kept) < top_k:
        best = int(np.argmax(score[remaining]))
        index = int(remaining[best])
        kept.append(index)
        remaining = np.delete(remaining, best)
        top_start, top_end = start[index], end[index]
        other_start, other_end = start[remaining], end[remaining]
        inter = np.maximum(np.minimum(other_end, top_end) - np.maximum(other_start, top_start), zero)
        iou = inter / (max(top_end - top_start, min_width) + (other_end - other_start) - inter)
        decayed = score[remaining] * np.exp(-(iou * iou) / sigma32)
        score[remaining] = decayed
        remaining = remaining[decayed >= score_threshold]
    if emit_last and remaining.size == 1 and len(kept) < top_k:
        kept.append(int(remaining[0]))
    order = np.sort(np.asarray(kept, dtype=np.int64))
    return np.stack([start[order], end[order], score[order]], axis=-1).reshape(-1, 3)


def soft_nms_torch(candidates: torch.Tensor, sigma: float = 0.5, top_k: int = 1000,
                   score_threshold: float = 0.001, emit_last: bool = False) -> torch.Tensor:
    """:func:`soft_nms` with PyTorch operations: bit-identical to the official ``softnms_v2``."""
    candidates = torch.as_tensor(candidates).detach().to("cpu", torch.float32)
    start = candidates[:, 0].contiguous()
    end = candidates[:, 1].contiguous()
    score = candidates[:, 2].clone()
    remaining = torch.nonzero(score >= score_threshold).flatten()
    kept: list[int] = []
    while remaining.numel() > 1 and len(kept) < top_k:
        best = int(torch.argmax(score[remaining]))
        index = int(remaining[best])
        kept.append(index)
        remaining = torch.cat([remaining[:best], remaining[best + 1:]])
        top_start, top_end = start[index], end[index]
        other_start, other_end = start[remaining], end[remaining]
        inter = torch.clamp(other_end.clamp(max=top_end) - other_start.clamp(min=top_start), min=0)
        iou = inter / (torch.clamp(top_end - top_start, min=1e-5) + (other_end - other_start) - inter)
        decayed = score[remaining] * torch.exp(-iou ** 2 / sigma)
        score[remaining] = decayed
        remaining = remaining[decayed >= score_threshold]
    if emit_last and remaining.numel() == 1 and len(kept) < top_k:
        kept.append(int(remaining[0]))
    order = torch.tensor(sorted(kept), dtype=torch.long)
    return torch.stack([start[order], end[order], score[order]], dim=-1)
