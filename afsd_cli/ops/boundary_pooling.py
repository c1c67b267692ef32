"""Boundary max pooling (official ``AFSD/prop_pooling/``) with backend dispatch.

``boundary_max_pool(x [B, Ch, T], segments [B, S, 4]) -> [B, Ch, S]``: channels of the first half
take the max over the start range ``segments[..., 0:2]``, the second half over the end range
``segments[..., 2:4]``; bounds are truncated toward zero, clamped to ``[0, T-1]`` and inclusive; a
reversed range reduces to its first element; the lowest index wins ties. No gradient flows to
``segments``.

Backends, picked per call from the input's device and ``$AFSD_BMP_BACKEND``:

* ``cuda``: compiled CUDA kernels (CUDA tensors), ``cpp``: compiled C++ kernels (CPU tensors), both
  built on first use (see :mod:`afsd_cli.ops.extension`);
* ``reference``: pure PyTorch (:mod:`afsd_cli.ops.boundary_pooling_reference`), any device.

``AFSD_BMP_BACKEND=auto`` (default) uses the compiled op when it builds and otherwise falls back to
the reference with one warning; ``reference`` always uses PyTorch; ``cpp`` / ``cuda`` require the
compiled op for CPU / CUDA tensors (RuntimeError if it cannot be built); any other value is a
:class:`~afsd_cli.errors.ConfigError`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from afsd_cli.ops import boundary_pooling_reference as reference
from afsd_cli.ops import extension
from afsd_cli.ops.backends import choose_backend

BACKEND_ENV = "AFSD_BMP_BACKEND"
BACKEND_CHOICES = ("auto", "reference", "cpp", "cuda")

# Forward algorithms of the compiled kernels (identical results, different speed).
ALGORITHMS = {"auto": 0, "scan": 1, "sparse_table": 2, "column_scan": 3}

_warned = False
_override: str | None = None  # set by use_backend()


class _ReferenceBackend:
    name = "reference"

    @staticmethod
    def forward(x, segments, with_argmax):
        return reference.forward_reference(x, segments)

    @staticmethod
    def backward(grad_output, argmax, length):
        return reference.backward_reference(grad_output, argmax, length)

    @staticmethod
    def legacy_backward(grad_output, x, segments):
        return reference.legacy_backward_reference(grad_output, x, segments)


class _CompiledBackend:
    def __init__(self, name: str) -> None:
        self.name = name

    @staticmethod
    def forward(x, segments, with_argmax, algorithm: int = 0):
        return extension.compiled_ops().forward(x, segments, with_argmax, algorithm)

    @staticmethod
    def backward(grad_output, argmax, length):
        return extension.compiled_ops().backward(grad_output, argmax, length)

    @staticmethod
    def legacy_backward(grad_output, x, segments):
        return extension.compiled_ops().legacy_backward(grad_output, x, segments)


REFERENCE = _ReferenceBackend()
CPP = _CompiledBackend("cpp")
CUDA = _CompiledBackend("cuda")


@contextlib.contextmanager
def use_backend(name: str):
    """Within the block, behave as if ``$AFSD_BMP_BACKEND`` were ``name`` (self-test, benchmarks)."""
    global _override
    if name not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(BACKEND_CHOICES)}")
    previous, _override = _override, name
    try:
        yield
    finally:
        _override = previous


def _requested_backend() -> str:
    if _override is not None:
        return _override
    return choose_backend(BACKEND_ENV, BACKEND_CHOICES)


def _fall_back(reason: str):
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"boundary_max_pool: compiled kernels unavailable ({reason}); using the slower pure-PyTorch "
            f"implementation (set {BACKEND_ENV}=reference to choose it explicitly)",
            RuntimeWarning,
            stacklevel=4,
        )
    return REFERENCE


def select_backend(device: torch.device):
    """The backend that handles tensors on ``device`` under the current ``$AFSD_BMP_BACKEND``."""
    mode = _requested_backend()
    if mode == "reference" or device.type not in ("cpu", "cuda"):
        return REFERENCE
    wanted, backend = ("cuda", CUDA) if device.type == "cuda" else ("cpp", CPP)
    state = extension.load_extension()
    available = state.cuda if wanted == "cuda" else state.cpu
    if available:
        return backend
    reason = state.errors.get(wanted, "unknown error")
    if mode == wanted:
        raise RuntimeError(f"{BACKEND_ENV}={mode} but the compiled {wanted} backend is unavailable: {reason}")
    return _fall_back(reason)


class _BoundaryMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, segments, legacy_grad, backend):
        output, argmax = backend.forward(x, segments, True)
        ctx.backend = backend
        ctx.legacy_grad = legacy_grad
        ctx.length = x.shape[2]
        if legacy_grad:
            ctx.save_for_backward(x, segments)
        else:
            ctx.save_for_backward(argmax)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        if ctx.legacy_grad:
            x, segments = ctx.saved_tensors
            grad_input = ctx.backend.legacy_backward(grad_output.contiguous(), x, segments)
        else:
            (argmax,) = ctx.saved_tensors
            grad_input = ctx.backend.backward(grad_output.contiguous(), argmax, ctx.length)
        return grad_input, None, None, None


def boundary_max_pool(input: torch.Tensor, segments: torch.Tensor, legacy_grad: bool = False) -> torch.Tensor:
    """Max of each channel over its boundary range: ``[B, Ch, T]``, ``[B, S, 4]`` -> ``[B, Ch, S]``.

    ``legacy_grad=True`` reproduces the official CUDA kernel's backward, which routed gradients with
    S (= ``segments.size(1)``) as the temporal size (``boundary_max_pooling_kernel.cu``); the forward is
    the same either way.
    """
    reference.check_inputs(input, segments)
    backend = select_backend(input.device)
    if legacy_grad and input.requires_grad and segments.shape[1] > input.shape[2]:
        raise ValueError(
            f"boundary_max_pool legacy backward: needs S <= T (S={segments.shape[1]}, T={input.shape[2]})"
        )
    if not (torch.is_grad_enabled() and input.requires_grad):
        return backend.forward(input, segments, False)[0]
    return _BoundaryMaxPool.apply(input, segments.detach(), bool(legacy_grad), backend)


@dataclass
class BackendInfo:
    """One row of :func:`available_backends`."""

    name: str  # "cuda", "cpp" or "reference"
    device: str  # device type it serves
    available: bool
    detail: str  # where it came from, or why it is unavailable


def available_backends(build: bool = True) -> list[BackendInfo]:
    """Backends and whether they load; ``build=True`` builds/loads the compiled op if not tried yet."""
    state = extension.load_extension() if build else extension.extension_state()
    if not state.attempted:
        pending = "not loaded yet (built on first use)"
        return [
            BackendInfo("cuda", "cuda", False, pending),
            BackendInfo("cpp", "cpu", False, pending),
            BackendInfo("reference", "any", True, "pure PyTorch"),
        ]
    where = f"{state.library}" if state.library else ""
    return [
        BackendInfo("cuda", "cuda", state.cuda, where if state.cuda else state.errors.get("cuda", "")),
        BackendInfo("cpp", "cpu", state.cpu, where if state.cpu else state.errors.get("cpp", "")),
        BackendInfo("reference", "any", True, "pure PyTorch"),
    ]


def compiled_forward(x: torch.Tensor, segments: torch.Tensor, algorithm: str = "auto", with_argmax: bool = True):
    """The compiled forward with an explicit algorithm (``auto``, ``scan``, ``sparse_table``):
    ``(y, argmax)``. For benchmarks and tests; raises RuntimeError when the op is unavailable."""
    reference.check_inputs(x, segments)
    return extension.compiled_ops().forward(x, segments, with_argmax, ALGORITHMS[algorithm])
