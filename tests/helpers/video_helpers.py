"""Make small real video files for tests: every frame's colour encodes its index.

Frame ``i`` is a flat RGB colour with 8 levels per channel (``level * 32 + 16``), so the index
(0..511) survives lossy codecs (mp4v/XVID/MJPG deviate by a few levels) and bicubic resizing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

CODECS = {"mp4v": ".mp4", "MJPG": ".avi", "XVID": ".avi"}
NTSC_FPS = 30000 / 1001


def index_colour(index: int) -> np.ndarray:
    """RGB uint8 colour of frame ``index`` (0..511)."""
    levels = np.array([index % 8, index // 8 % 8, index // 64 % 8])
    return (levels * 32 + 16).astype(np.uint8)


def colour_index(rgb: np.ndarray) -> int:
    """Frame index encoded by an RGB image (or a single RGB colour)."""
    mean = np.asarray(rgb, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    levels = np.clip(np.round((mean - 16) / 32), 0, 7).astype(int)
    return int(levels[0] + 8 * levels[1] + 64 * levels[2])


def frame_indices(frames: np.ndarray) -> list[int]:
    """Decode the index of every frame of a ``[T, H, W, 3]`` RGB array."""
    return [colour_index(frame) for frame in frames]


def make_clip(
    path: str | Path,
    fps: float = 30.0,
    num_frames: int = 90,
    size: tuple[int, int] = (64, 48),
    fourcc: str = "mp4v",
    frames: np.ndarray | None = None,
) -> Path:
    """Write a clip with OpenCV; frames default to the index colours. ``size`` is (width, height)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path} with {fourcc}")
    try:
        if frames is None:
            for i in range(num_frames):
                frame = np.empty((size[1], size[0], 3), np.uint8)
                frame[:] = index_colour(i)[::-1]  # OpenCV wants BGR
                writer.write(frame)
        else:
            for rgb in frames:
                writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    finally:
        writer.release()
    return path


def textured_frames(num_frames: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> np.ndarray:
    """Moving smooth texture (for resize comparisons where flat colours would hide differences)."""
    rng = np.random.default_rng(seed)
    width, height = size
    base = rng.integers(0, 256, (height // 4 + 2, width // 4 + 2, 3)).astype(np.float32)
    import cv2

    big = cv2.resize(base, (width + 64, height), interpolation=cv2.INTER_CUBIC)
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        out[i] = np.clip(big[:, i % 64 : i % 64 + width], 0, 255)
    return out


def truncate_file(path: str | Path, fraction: float = 0.5) -> Path:
    """Cut a file to ``fraction`` of its bytes (a download that stopped half-way)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_garbage(path: str | Path, num_bytes: int = 4096, seed: int = 0) -> Path:
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, num_bytes, dtype=np.uint8).tobytes())
    return path
