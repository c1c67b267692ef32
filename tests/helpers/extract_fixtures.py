"""Deterministic I3D weights and frames for the `afsd extract` reference tests.

tests/data/extract_reference/features.npz holds features computed by the public pytorch-i3d
``InceptionI3d`` (run outside this repository) with weights from :func:`generated_i3d_weights`
on frames from :func:`generated_frames`, for each case of :data:`REFERENCE_CASES`: the clip of
feature ``i`` is frames ``[i*stride, i*stride + clip_frames)`` (a video shorter than one clip is
padded with its last frame), centre-cropped like pytorch-i3d's ``videotransforms.CenterCrop``,
scaled by ``x/255*2-1``, run to ``Mixed_5c`` and averaged over time and space (at 16 frames of
224 px: ``extract_features`` itself). The tests regenerate the same weights and frames.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).parents[1] / "data" / "extract_reference" / "features.npz"

RGB_WEIGHTS_SEED = 1
FLOW_WEIGHTS_SEED = 2
LOGITS_CLASSES = 400  # pytorch-i3d's weight files carry the Kinetics-400 classifier

# name → (frames shape [T, H, W, C], frames seed, crop size, clip_frames, stride)
REFERENCE_CASES: dict[str, tuple[tuple[int, int, int, int], int, int, int, int]] = {
    "rgb": ((24, 64, 64, 3), 11, 64, 16, 4),
    "rgb_crop": ((20, 77, 90, 3), 12, 56, 16, 4),  # (77-56)/2 = 10.5: the offset rounds half to even
    "rgb_short": ((10, 64, 64, 3), 13, 64, 16, 4),  # shorter than one clip: padded with its last frame
    "rgb_clip8": ((20, 48, 48, 3), 14, 48, 8, 5),
    "flow": ((24, 64, 64, 2), 15, 64, 16, 4),
    "rgb_224": ((16, 230, 250, 3), 16, 224, 16, 4),  # extract_features' own setting
}


def i3d_weight_layout(in_channels: int) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of a pytorch-i3d weight file: our backbone's keys plus the ``logits`` layer."""
    from afsd_cli.model.i3d import InceptionI3d

    layout = [(key, tuple(value.shape)) for key, value in InceptionI3d(in_channels).state_dict().items()]
    return layout + [("logits.conv3d.weight", (LOGITS_CLASSES, 1024, 1, 1, 1)), ("logits.conv3d.bias", (LOGITS_CLASSES,))]


def generated_i3d_weights(in_channels: int, seed: int, batches_tracked: bool = True) -> dict[str, torch.Tensor]:
    """A plausible pytorch-i3d state dict, identical on every machine for the same seed.

    Conv weights ~ N(0, 2/fan_in) keep activations O(1) through the backbone; BN scales near 1,
    small shifts and means, variances in [0.5, 1.5]. ``batches_tracked=False`` leaves out the
    ``num_batches_tracked`` entries, as some published weight files do.
    """
    rng = np.random.default_rng(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in i3d_weight_layout(in_channels):
        if key.endswith("num_batches_tracked"):
            if batches_tracked:
                state[key] = torch.tensor(0, dtype=torch.int64)
            continue
        normal = rng.standard_normal(shape)
        if key.endswith("running_var"):
            value = 0.5 + rng.random(shape)
        elif key.endswith("running_mean"):
            value = 0.1 * normal
        elif len(shape) >= 3:  # conv weight
            value = normal * math.sqrt(2.0 / math.prod(shape[1:]))
        elif key.endswith("weight"):  # BN scale
            value = 1.0 + 0.1 * normal
        else:  # BN shift, logits bias
            value = 0.05 * normal
        state[key] = torch.from_numpy(value.astype(np.float32))
    return state


def generated_frames(shape: tuple[int, int, int, int], seed: int) -> np.ndarray:
    """uint8 ``[T, H, W, C]``: a moving smooth pattern plus noise, so features change along time."""
    rng = np.random.default_rng(seed)
    frames, height, width, channels = shape
    t = np.arange(frames).reshape(-1, 1, 1, 1)
    y = np.arange(height).reshape(1, -1, 1, 1)
    x = np.arange(width).reshape(1, 1, -1, 1)
    c = np.arange(channels).reshape(1, 1, 1, -1)
    wave = np.sin(0.4 * t * (1 + c) + 0.15 * x - 0.1 * y) * np.cos(0.05 * t + 0.07 * y)
    noise = rng.random(shape) * 2 - 1
    return np.clip(127.5 + 127.5 * (0.7 * wave + 0.3 * noise), 0, 255).astype(np.uint8)


def save_weights(path: Path, in_channels: int, seed: int, batches_tracked: bool = True) -> Path:
    torch.save(generated_i3d_weights(in_channels, seed, batches_tracked), path)
    return path
