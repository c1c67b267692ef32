"""Pillow's antialiased bicubic resize (``Image.resize(size, Image.BICUBIC)``), bit for bit, fast.

The official frames were made with PIL, whose resize costs more CPU than decoding the video.
This module computes the same integers three ways:

* ``native``: ``csrc/pil_bicubic/pil_bicubic.c`` through ctypes. Same fixed-point arithmetic as
  Pillow, with loops reordered so they vectorise (about 5x faster than Pillow on a 320x240 frame
  with AVX2, 2x with the portable loops; see benchmarks/results_data.md). Compiled with the
  system C compiler on first use and cached (:mod:`afsd_cli.ops.native`).
* ``pillow``: Pillow itself (the fallback when no C compiler is available).
* :func:`resize_reference`: a short NumPy version of the arithmetic, for tests and for probing
  the installed Pillow.

What Pillow computes, per axis: output ``o`` reads inputs ``first .. first + count`` with double
weights ``bicubic((i - centre + 0.5) / filterscale)`` (a = -0.5, support 2 * filterscale),
normalised to sum 1 and rounded to 22-bit fixed point; each pass outputs
``clamp((2^21 + sum(pixel * weight)) >> 22, 0, 255)``. The horizontal pass runs first, except in
recent Pillow releases, which run the vertical pass first when the height shrinks by more than
twice as many pixels as the width. The order changes the rounding of the intermediate image, so
the native backend asks the installed Pillow which rule it follows (:func:`pillow_pass_rule`)
and checks itself against Pillow once per process before it is used.

``$AFSD_RESIZE_BACKEND``: ``auto`` (default: native if it builds and agrees with Pillow),
``native`` (fail if it cannot be used) or ``pillow``. No torch is imported here: ``prepare`` and its
worker processes use this module.
"""

from __future__ import annotations

import ctypes
import math
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from afsd_cli.errors import AFSDError
from afsd_cli.ops.backends import choose_backend

PRECISION_BITS = 22
BACKEND_ENV = "AFSD_RESIZE_BACKEND"
BACKENDS = ("auto", "native", "pillow")
_SOURCE = "pil_bicubic/pil_bicubic.c"


def _bicubic(x: float) -> float:
    # Keys' cubic convolution with a = -0.5, written in Pillow's operation order (same doubles).
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


@lru_cache(maxsize=64)
def pillow_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(bounds int32 [out, 2] = (first, count), taps int32 [out, ksize])`` as Pillow builds them."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    scale = filterscale = in_size / out_size
    if filterscale < 1.0:
        filterscale = 1.0
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    bounds = np.zeros((out_size, 2), np.int32)
    taps = np.zeros((out_size, ksize), np.int32)
    one = float(1 << PRECISION_BITS)
    for out in range(out_size):
        centre = (out + 0.5) * scale
        inverse = 1.0 / filterscale
        first = max(int(centre - support + 0.5), 0)  # int() truncates towards zero, like C
        count = min(int(centre + support + 0.5), in_size) - first
        weights = [_bicubic((i + first - centre + 0.5) * inverse) for i in range(count)]
        total = 0.0
        for weight in weights:  # summed in order, as Pillow does
            total += weight
        for i, weight in enumerate(weights):
            if total != 0.0:
                weight /= total
            taps[out, i] = int(-0.5 + weight * one) if weight < 0 else int(0.5 + weight * one)
        bounds[out] = (first, count)
    bounds.setflags(write=False)
    taps.setflags(write=False)
    return bounds, taps


def _one_pass(values: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    bounds, taps = pillow_coefficients(values.shape[axis], out_size)
    moved = np.moveaxis(values, axis, 0).astype(np.int64)
    out = np.empty((out_size,) + moved.shape[1:], np.int64)
    for o, (first, count) in enumerate(bounds):
        out[o] = (1 << (PRECISION_BITS - 1)) + np.tensordot(taps[o, :count].astype(np.int64),
                                                            moved[first:first + count], axes=1)
    return np.moveaxis(np.clip(out >> PRECISION_BITS, 0, 255).astype(np.uint8), 0, axis)


def resize_reference(frame: np.ndarray, height: int, width: int, vertical_first: bool = False) -> np.ndarray:
    """Pillow's bicubic resize of ``uint8 [H, W(, C)]`` in plain NumPy (slow; for tests/probes)."""
    out = np.asarray(frame)
    passes = [(1, width), (0, height)]
    for axis, size in reversed(passes) if vertical_first else passes:
        if out.shape[axis] != size:
            out = _one_pass(out, axis, size)
    return out


def vertical_first(height: int, width: int, out_height: int, out_width: int, rule: bool) -> bool:
    """Whether a Pillow that follows the height-first ``rule`` runs the vertical pass first."""
    shrink_h, shrink_w = height - out_height, width - out_width
    return rule and shrink_h > 0 and shrink_h > shrink_w * 2


@lru_cache(maxsize=1)
def pillow_pass_rule() -> bool:
    """True when the installed Pillow picks the vertical pass first for tall shrinks.

    Probed once: a 16x64 image shrunk to 8x8 differs between the two orders.
    """
    from PIL import Image

    probe = np.random.default_rng(7).integers(0, 256, (64, 16, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(probe).resize((8, 8), Image.BICUBIC))
    return not np.array_equal(pillow, resize_reference(probe, 8, 8, vertical_first=False))


# --------------------------------------------------------------------------------------------
# native backend


@dataclass
class NativeState:
    attempted: bool = False
    library: ctypes.CDLL | None = None
    rule: bool = False
    simd: bool = False  # the AVX2 path is in use (else the portable C loops)
    error: str | None = None  # why the native backend is not used


_native = NativeState()
_lock = threading.Lock()
_P, _I, _L = ctypes.c_void_p, ctypes.c_int, ctypes.c_long


def _self_check(library: ctypes.CDLL, rule: bool) -> str | None:
    """Compare native with Pillow on a few shapes (both pass orders, upscale, one axis only)."""
    from PIL import Image

    rng = np.random.default_rng(11)
    for shape, (out_h, out_w) in (((48, 64, 3), (20, 24)), ((64, 16, 3), (8, 8)), ((9, 7, 3), (30, 20)),
                                  ((40, 30, 3), (40, 11)), ((24, 50, 1), (5, 50))):
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        pil_in = Image.fromarray(frame[:, :, 0] if shape[2] == 1 else frame)
        expected = np.asarray(pil_in.resize((out_w, out_h), Image.BICUBIC)).reshape(out_h, out_w, shape[2])
        got = BicubicResizer(out_h, out_w, reverse_channels=False, backend="native")._native_resize(
            frame, library, rule)
        if not np.array_equal(expected, got):
            return f"native resize disagrees with the installed Pillow on {shape[:2]} -> {(out_h, out_w)}"
    return None


def native_state(build: bool = True) -> NativeState:
    """Build/load the native resize once per process; never raises (the reason is recorded)."""
    with _lock:
        if _native.attempted or not build:
            return _native
        _native.attempted = True
        from afsd_cli.ops.native import try_load_library

        library, _native.error = try_load_library(_SOURCE, "afsd_pil_bicubic")
        if library is None:
            return _native
        library.afsd_resize_u8.argtypes = [_P, _I, _I, _I, _L, _P, _I, _I, _I, _I, _I, _I,
                                           _P, _P, _I, _P, _P, _I, _P, _L]
        library.afsd_resize_u8.restype = _I
        library.afsd_resize_workspace.argtypes = [_I, _I, _I, _I, _I]
        library.afsd_resize_workspace.restype = _L
        library.afsd_resize_simd.argtypes = [_I]
        library.afsd_resize_simd.restype = _I
        _native.simd = bool(library.afsd_resize_simd(1))
        rule = pillow_pass_rule()
        problem = _self_check(library, rule)
        if problem:
            _native.error = problem
            return _native
        _native.library, _native.rule = library, rule
        return _native


def requested_backend() -> str:
    """``$AFSD_RESIZE_BACKEND`` checked (:class:`~afsd_cli.errors.ConfigError` if unknown)."""
    return choose_backend(BACKEND_ENV, BACKENDS)


def active_backend() -> tuple[str, str]:
    """``(backend, detail)`` that :class:`BicubicResizer` uses under ``$AFSD_RESIZE_BACKEND``."""
    requested = requested_backend()
    if requested == "pillow":
        return "pillow", f"${BACKEND_ENV}=pillow"
    state = native_state()
    if state.library is not None:
        path = "AVX2" if state.simd else "portable C"
        return "native", f"C kernel ({path}) via ctypes: {state.library._name}"
    if requested == "native":
        raise AFSDError(f"${BACKEND_ENV}=native but the native resize is unavailable: {state.error}")
    return "pillow", f"native resize unavailable: {state.error}"


_warned = False


class BicubicResizer:
    """Callable ``frame [H, W, C] uint8 -> [height, width, C] uint8`` equal to Pillow's bicubic.

    ``reverse_channels`` reverses the channel order of the result (BGR in, RGB out: resampling
    is per channel, so this equals converting first and costs nothing). Coefficients and the
    work buffer are reused across frames of the same size, so one instance must not be called
    from two threads at once (the native call releases the GIL); make one per thread.
    """

    def __init__(self, height: int, width: int, *, reverse_channels: bool = False, backend: str | None = None):
        global _warned
        self.height, self.width, self.reverse_channels = int(height), int(width), bool(reverse_channels)
        if backend is None:
            backend, detail = active_backend()
            if backend == "pillow" and requested_backend() == "auto" and not _warned:
                _warned = True
                warnings.warn(f"using Pillow's (slower) resize: {detail}", RuntimeWarning, stacklevel=2)
        self.backend = backend
        self._plans: dict[tuple[int, int, int], tuple] = {}

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = self._check(frame)
        return self._resize(frame, np.empty(self.output_shape(frame), np.uint8))

    def output_shape(self, frame: np.ndarray) -> tuple[int, int, int]:
        return self.height, self.width, frame.shape[2]

    def into(self, frame: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Resize ``frame`` into the C-contiguous uint8 array ``out`` (e.g. a row of a frame
        array, saving an allocation and a copy per frame); returns ``out``."""
        frame = self._check(frame)
        if out.shape != self.output_shape(frame) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"output must be a C-contiguous uint8 {self.output_shape(frame)} array, "
                             f"got {out.dtype} {out.shape}")
        return self._resize(frame, out)

    def _resize(self, frame: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self.backend == "native":
            state = native_state()
            return self._native_resize(frame, state.library, state.rule, out)
        out[...] = self._pillow_resize(frame)
        return out

    @staticmethod
    def _check(frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3:
            raise ValueError(f"expected a uint8 [H, W, C] frame, got {frame.dtype} {frame.shape}")
        return frame

    def _pillow_resize(self, frame: np.ndarray) -> np.ndarray:
        from PIL import Image

        channels = frame.shape[2]
        image = Image.fromarray(frame[:, :, 0] if channels == 1 else frame)
        out = np.asarray(image.resize((self.width, self.height), Image.BICUBIC)).reshape(
            self.height, self.width, channels)
        return out[:, :, ::-1] if self.reverse_channels else out

    def _native_resize(self, frame: np.ndarray, library: ctypes.CDLL, rule: bool,
                       out: np.ndarray | None = None) -> np.ndarray:
        height, width, channels = frame.shape
        if frame.strides[1:] != (channels, 1):
            frame = np.ascontiguousarray(frame)
        plan = self._plans.get((height, width, channels))
        if plan is None:
            xbounds, xtaps = pillow_coefficients(width, self.width)
            ybounds, ytaps = pillow_coefficients(height, self.height)
            workspace = np.empty(library.afsd_resize_workspace(height, width, channels, self.height, self.width),
                                 np.uint8)
            first = vertical_first(height, width, self.height, self.width, rule)
            plan = (xbounds, xtaps, ybounds, ytaps, workspace, first,
                    # pointers taken once: reading .ctypes.data costs about 1 us each
                    xbounds.ctypes.data, xtaps.ctypes.data, ybounds.ctypes.data, ytaps.ctypes.data,
                    workspace.ctypes.data)
            self._plans[(height, width, channels)] = plan
        xbounds, xtaps, ybounds, ytaps, workspace, first, xb, xk, yb, yk, ws = plan
        if out is None:
            out = np.empty((self.height, self.width, channels), np.uint8)
        status = library.afsd_resize_u8(
            frame.ctypes.data, height, width, channels, frame.strides[0], out.ctypes.data, self.height,
            self.width, int(self.reverse_channels), int(width != self.width), int(height != self.height),
            int(first), xb, xk, xtaps.shape[1], yb, yk, ytaps.shape[1], ws, workspace.nbytes)
        if status != 0:  # cannot happen: the workspace is sized by the library itself
            raise RuntimeError("native resize: workspace too small")
        return out
