"""``compute_flow``: RGB frames → quantised optical flow, the format of the official flow npy.

Pipeline (as ``gen_denseflow_npy.py``): RGB uint8 ``[T, H, W, 3]`` → grey (OpenCV's BGR→GRAY weights) → flow on
each consecutive pair → clip to ±20 px and quantise to uint8 → duplicate the last flow so the
output has T frames like the RGB input. With ``jpeg_quality`` set, the RGB frames and the flow
images each make a JPEG round-trip, as the official pipeline stores both as JPEG files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from afsd_cli.data.flow.quantize import quantize_flow
from afsd_cli.errors import ConfigError, InputError

# Frame pairs solved at once by ``tvl1``: on a GPU a batch costs as many sequential steps as
# its slowest pair, so big batches are what make it fast (4096 pairs of 112x112 ≈ 5 GB).
Progress = Callable[[int], Any]  # called with the number of frame pairs just computed

DEFAULT_BATCH_SIZE = 64
DEFAULT_CUDA_BATCH_SIZE = 4096
MIN_SIDE = 4


def _torch_available() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a project dependency
        return False, f"PyTorch is not importable: {exc}"
    where = "CPU and CUDA" if torch.cuda.is_available() else "CPU (no CUDA device visible)"
    return True, f"PyTorch {torch.__version__}, {where}"


def _cv2_available() -> tuple[bool, str]:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - cv2 is a project dependency
        return False, f"OpenCV is not importable: {exc}"
    return True, f"OpenCV {cv2.__version__}"


def _opencv_tvl1_available() -> tuple[bool, str]:
    from afsd_cli.data.flow.opencv_backends import opencv_tvl1_available

    return opencv_tvl1_available()


METHOD_DESCRIPTIONS = {
    "tvl1": "our Dual TV-L1 in PyTorch (OpenCV's algorithm and defaults), batched, CPU or CUDA",
    "opencv-tvl1": "cv2.optflow.DualTVL1OpticalFlow (needs opencv-contrib-python), CPU",
    "dis": "cv2.DISOpticalFlow (preset 'medium' by default, or 'fast'/'ultrafast'), CPU, fast approximation",
    "farneback": "cv2.calcOpticalFlowFarneback, CPU, fast approximation",
}

_AVAILABILITY: dict[str, Callable[[], tuple[bool, str]]] = {
    "tvl1": _torch_available,
    "opencv-tvl1": _opencv_tvl1_available,
    "dis": _cv2_available,
    "farneback": _cv2_available,
}

METHODS = tuple(METHOD_DESCRIPTIONS)


def available_methods() -> dict[str, tuple[bool, str]]:
    """Every flow method → (available here, why / which backend)."""
    return {name: check() for name, check in _AVAILABILITY.items()}


def _validate_frames(frames: Any) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise InputError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must have shape [T, H, W, 3], got {list(frames.shape)}")
    if frames.shape[0] == 0:
        raise InputError("frames is empty (T=0): no flow can be computed")
    if min(frames.shape[1:3]) < MIN_SIDE:
        raise InputError(f"frames of {frames.shape[1]}x{frames.shape[2]} px are too small for "
                         f"optical flow (need at least {MIN_SIDE}x{MIN_SIDE})")
    return frames


def to_grey(frames: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[T, H, W, 3]`` → grey uint8 ``[T, H, W]`` exactly as cv2.cvtColor rounds."""
    import cv2

    t, h, w, _ = frames.shape
    flat = np.ascontiguousarray(frames).reshape(t * h, w, 3)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(t, h, w)


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode one uint8 image (grey or 3-channel, channel order untouched)."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - cv2 fails only on unsupported arrays, excluded above
        raise InputError("JPEG encoding of a frame failed")
    flag = cv2.IMREAD_GRAYSCALE if image.ndim == 2 else cv2.IMREAD_COLOR
    return cv2.imdecode(encoded, flag)


def _check_device(method: str, device: str) -> str:
    device = str(device)
    if method != "tvl1":
        if device != "cpu":
            raise ConfigError(f"flow method {method!r} runs on the CPU only (got device {device!r}); "
                              "use method 'tvl1' for CUDA")
        return device
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available "
                          f"(PyTorch {torch.__version__})")
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r} (use 'cpu' or 'cuda')")
    return device


def compute_flow_float(frames: np.ndarray, method: str = "tvl1", device: str = "cpu",
                       batch_size: int | None = None, **method_options: Any) -> np.ndarray:
    """Float32 flow ``[T-1, H, W, 2]`` (pixels, x then y) of consecutive frame pairs."""
    frames = _validate_frames(frames)
    return _flow_of_grey(to_grey(frames), method, device, batch_size, method_options)


def _flow_of_grey(grey: np.ndarray, method: str, device: str, batch_size: int | None,
                  method_options: dict[str, Any], progress: Progress | None = None) -> np.ndarray:
    if method not in METHOD_DESCRIPTIONS:
        raise ConfigError(f"unknown flow method {method!r} (choose from {', '.join(METHODS)})")
    available, reason = available_methods()[method]
    if not available:
        raise ConfigError(f"flow method {method!r} is unavailable: {reason}")
    device = _check_device(method, device)
    if batch_size is None:
        batch_size = DEFAULT_CUDA_BATCH_SIZE if device.startswith("cuda") else DEFAULT_BATCH_SIZE
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if len(grey) < 2:
        return np.zeros((0, *grey.shape[1:], 2), dtype=np.float32)
    if method == "tvl1":
        from afsd_cli.data.flow.tvl1 import tvl1_flow_frames

        return tvl1_flow_frames(grey, device=device, batch_size=int(batch_size), progress=progress, **method_options)
    from afsd_cli.data.flow import opencv_backends

    backend = {"farneback": opencv_backends.farneback_flow, "dis": opencv_backends.dis_flow,
               "opencv-tvl1": opencv_backends.opencv_tvl1_flow}[method]
    return backend(grey, progress=progress, **method_options)


def compute_flow(frames: np.ndarray, method: str = "tvl1", device: str = "cpu",
                 jpeg_quality: int | None = None, batch_size: int | None = None,
                 progress: Progress | None = None, **method_options: Any) -> np.ndarray:
    """RGB uint8 ``[T, H, W, 3]`` → quantised flow uint8 ``[T, H, W, 2]`` (x, y).

    ``flow[t]`` maps frame ``t`` to ``t+1`` (x > 0: motion to the right); the last flow is
    repeated so T matches, and a single frame gives one zero-motion frame (all 128).
    ``jpeg_quality`` (e.g. 95, OpenCV's default) adds the JPEG round-trips of the official
    storage: the RGB frames before the flow, the grey flow images after quantisation.
    ``batch_size`` is the number of frame pairs the ``tvl1`` method solves at once (default 64
    on the CPU, 4096 on CUDA);
    ``method_options`` go to the method (e.g. ``preset="fast"`` or ``warps=3`` for ``tvl1``).
    ``progress(pairs)`` is called with the number of frame pairs just computed, as they finish.
    Raises InputError for bad frames, ConfigError for an unknown/unavailable method, a bad
    option or device.
    """
    frames = _validate_frames(frames)
    if jpeg_quality is not None:
        quality = int(jpeg_quality)
        if not 0 <= quality <= 100:
            raise ConfigError(f"jpeg_quality must be in 0..100, got {jpeg_quality}")
        # Encoded as BGR, like the official cv2.imwrite of the flipped RGB frames: the JPEG
        # colour transform weighs the channels differently.
        frames = np.stack([jpeg_round_trip(np.ascontiguousarray(frame[..., ::-1]), quality)[..., ::-1]
                           for frame in frames])
    grey = to_grey(frames)
    flow = _flow_of_grey(grey, method, device, batch_size, method_options, progress)
    t, h, w = grey.shape
    quantized = np.empty((t, h, w, 2), dtype=np.uint8)
    if len(flow) == 0:
        quantized[:] = quantize_flow(np.zeros(1, dtype=np.float32))[0]
        return quantized
    quantized[: t - 1] = quantize_flow(flow)
    quantized[t - 1] = quantized[t - 2]
    if jpeg_quality is not None:
        for index in range(t - 1):
            for channel in range(2):
                quantized[index, ..., channel] = jpeg_round_trip(
                    np.ascontiguousarray(quantized[index, ..., channel]), quality)
        quantized[t - 1] = quantized[t - 2]
    return quantized
