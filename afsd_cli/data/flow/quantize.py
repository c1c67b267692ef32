"""Flow <-> uint8 image quantisation, as the official (denseflow ``-b=20``) flow images use.

A component ``v`` (pixels) becomes ``0`` below ``-bound``, ``255`` above ``+bound`` and
``round(255 * (v + bound) / (2 * bound))`` in between, computed in float64 with rounding half
to even (``cvRound`` on a double rounds with the FPU's default mode, as ``np.rint`` does).
128 is therefore "no motion" up to half a step (0 px maps to 127.5 → 128).
"""

from __future__ import annotations

import numpy as np

from afsd_cli.errors import InputError

FLOW_BOUND = 20.0


def quantize_flow(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Float flow (any shape, pixels) → uint8 of the same shape, clipped to ``±bound``."""
    values = np.asarray(flow, dtype=np.float64)
    # NaN/inf would make rint/astype undefined; treat NaN as no motion, inf as the bound.
    values = np.nan_to_num(values, nan=0.0, posinf=bound, neginf=-bound)
    scaled = 255.0 * (np.clip(values, -bound, bound) + bound) / (2.0 * bound)
    return np.rint(scaled).astype(np.uint8)


def dequantize_flow(quantized: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """uint8 flow image → float32 pixels (the centre of each quantisation step)."""
    values = np.asarray(quantized)
    if values.dtype != np.uint8:
        raise InputError(f"quantised flow must be uint8, got {values.dtype}")
    return (values.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound))
