"""Flow methods backed by OpenCV: Farneback, DIS and (with opencv-contrib) Dual TV-L1.

Each takes grey uint8 frames ``[T, H, W]`` and returns float32 flows ``[T-1, H, W, 2]`` for the
consecutive pairs ``(t, t+1)``; ``flow[t, y, x] = (dx, dy)`` moves the pixel at ``(x, y)`` of
frame ``t`` to ``(x+dx, y+dy)`` in frame ``t+1`` (OpenCV's own convention).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from afsd_cli.errors import ConfigError

FARNEBACK_DEFAULTS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5,
                          poly_sigma=1.2, flags=0)
DIS_PRESETS = ("ultrafast", "fast", "medium")
# The parameters of cv2.optflow.DualTVL1OpticalFlow_create, with its defaults.
OPENCV_TVL1_DEFAULTS = dict(tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.01,
                            innnerIterations=30, outerIterations=10, scaleStep=0.8, gamma=0.0,
                            medianFiltering=5)

CONTRIB_HINT = (
    "OpenCV's TV-L1 lives in opencv-contrib-python, which conflicts with the opencv-python the "
    "project installs (both own the cv2 package): install it in a separate virtual environment "
    "(`pip uninstall opencv-python && pip install opencv-contrib-python`), or use method 'tvl1' "
    "(our PyTorch TV-L1 with the same algorithm and defaults)"
)


def _check_options(method: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"unknown option(s) for flow method {method!r}: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(allowed))})")


def _pairwise(method: str, grey: np.ndarray, one_pair: Callable[[np.ndarray, np.ndarray], np.ndarray],
              progress: Callable[[int], Any] | None = None) -> np.ndarray:
    import cv2

    flows = np.empty((max(len(grey) - 1, 0), *grey.shape[1:], 2), dtype=np.float32)
    try:
        for t in range(len(grey) - 1):
            flows[t] = one_pair(grey[t], grey[t + 1])
            if progress is not None and (t % 8 == 7 or t == len(grey) - 2):  # every 8 pairs, and the rest
                progress(t % 8 + 1)
    except (cv2.error, TypeError) as exc:
        # The frames were validated already: what OpenCV rejects here are the options.
        raise ConfigError(f"OpenCV rejected the options of flow method {method!r}: "
                          f"{str(exc).strip().splitlines()[-1]}") from None
    return flows


def farneback_flow(grey: np.ndarray, progress: Callable[[int], Any] | None = None, **options: Any) -> np.ndarray:
    import cv2

    _check_options("farneback", options, set(FARNEBACK_DEFAULTS))
    params = {**FARNEBACK_DEFAULTS, **options}
    return _pairwise("farneback", grey, lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, **params), progress)


def dis_flow(grey: np.ndarray, preset: str = "medium", progress: Callable[[int], Any] | None = None,
             **options: Any) -> np.ndarray:
    import cv2

    _check_options("dis", options, set())
    if preset not in DIS_PRESETS:
        raise ConfigError(f"unknown DIS preset {preset!r} (choose from {', '.join(DIS_PRESETS)})")
    code = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[preset]
    dis = cv2.DISOpticalFlow_create(code)
    return _pairwise("dis", grey, lambda a, b: dis.calc(a, b, None), progress)


def opencv_tvl1_available() -> tuple[bool, str]:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - cv2 is a project dependency
        return False, f"OpenCV is not importable: {exc}"
    if not hasattr(cv2, "optflow") or not hasattr(cv2.optflow, "DualTVL1OpticalFlow_create"):
        return False, f"cv2.optflow is missing (plain opencv-python {cv2.__version__}). {CONTRIB_HINT}"
    return True, f"opencv-contrib {cv2.__version__}"


def opencv_tvl1_flow(grey: np.ndarray, progress: Callable[[int], Any] | None = None, **options: Any) -> np.ndarray:
    import cv2

    available, reason = opencv_tvl1_available()
    if not available:
        raise ConfigError(f"flow method 'opencv-tvl1' is unavailable: {reason}")
    _check_options("opencv-tvl1", options, set(OPENCV_TVL1_DEFAULTS))
    params = {**OPENCV_TVL1_DEFAULTS, **options}
    try:
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(**params)
    except (cv2.error, TypeError) as exc:
        raise ConfigError(f"OpenCV rejected the options of flow method 'opencv-tvl1': {exc}") from None
    return _pairwise("opencv-tvl1", grey, lambda a, b: tvl1.calc(a, b, None), progress)
