"""The network of ``afsd extract``: Inception-I3D to ``Mixed_5c``, averaged over time and space.

For 16-frame clips of 224 px this is pytorch-i3d's ``InceptionI3d.extract_features``
(``Mixed_5c`` is ``[1024, 2, 7, 7]``, then ``AvgPool3d([2, 7, 7])``); the mean generalises it to
other clip lengths and sizes.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np
import torch

from afsd_cli.errors import CheckpointError

ENDPOINT = "Mixed_5c"
CHANNELS = 1024  # Mixed_5c
IN_CHANNELS = {"rgb": 3, "flow": 2}
DEFAULT_BATCH = {"cpu": 8, "cuda": 32}  # clips per forward pass (benchmarks/results_extract.md)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_i3d(path: str | Path, in_channels: int):
    """The I3D up to Mixed_5c with every tensor from ``path`` (pytorch-i3d file or AFSD checkpoint).

    Loading is ``I3DBackbone.load_pretrained``'s; here a file that leaves any weight at its
    random initial value is refused, since its features would be noise.
    """
    from afsd_cli.model.i3d import I3DBackbone

    backbone = I3DBackbone(in_channels)
    report = backbone.load_pretrained(path)
    missing = [key for key in report.missing if not key.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(
            f"I3D weights incomplete: {len(missing)} tensor(s) missing (e.g. {', '.join(missing[:3])})", path)
    return backbone._model.eval(), report


class ClipEncoder:
    """uint8 clips ``[B, T, H, W, C]`` → float32 features ``[B, 1024]`` on one device."""

    def __init__(self, model: torch.nn.Module, device: str, amp: str = "off"):
        self.device = torch.device(device)
        # On the CPU, channels-last convolutions measured 1.26x faster (benchmarks/results_extract.md),
        # and the clips already come channels-last.
        self.memory_format = torch.channels_last_3d if self.device.type == "cpu" else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(self.device, non_blocking=True)
        # [B, T, H, W, C] → [B, C, T, H, W], then x/255*2-1 as pytorch-i3d's data loaders scale
        x = x.permute(0, 4, 1, 2, 3).contiguous(memory_format=self.memory_format).float().div_(255).mul_(2).sub_(1)
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            volume = self.model(x, (ENDPOINT,))[ENDPOINT]
        return volume.float().mean(dim=(2, 3, 4)).cpu().numpy()


def default_batch_size(device: str) -> int:
    return DEFAULT_BATCH["cuda" if device.startswith("cuda") else "cpu"]
