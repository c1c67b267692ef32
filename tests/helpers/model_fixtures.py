"""Deterministic weights, clips and output summaries shared by the model tests.

The parity numbers under tests/data/model_parity/ were produced by running the official AFSD
network (outside this repository) with weights from :func:`generated_state_dict` on the clip
from :func:`generated_clip`, summarised by :func:`summarise_outputs`. The tests regenerate the
same weights and input, so no 100 MB weight file is stored.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).parents[1] / "data"
KEY_LAYOUTS = DATA / "checkpoint_keys"
PARITY = DATA / "model_parity"

# outputs too big to store whole: kept as sums plus a fixed subsample of elements
LARGE_OUTPUTS = ("start", "end", "start_loc_prop", "end_loc_prop", "start_conf_prop", "end_conf_prop")
SUBSAMPLE = 4096
OUTPUT_NAMES = (
    "loc", "conf", "prop_loc", "prop_conf", "center", "priors",
    "start", "end", "start_loc_prop", "end_loc_prop", "start_conf_prop", "end_conf_prop",
)


def key_layout(variant: str) -> list[tuple[str, list[int], str]]:
    """[(key, shape, dtype)] of an official checkpoint variant, e.g. ``thumos14_rgb``."""
    return [tuple(entry) for entry in json.loads((KEY_LAYOUTS / f"{variant}.json").read_text())]


def generated_state_dict(layout, seed: int = 0, loc_bias: float = 2.5) -> dict[str, torch.Tensor]:
    """A plausible state dict for ``layout``, identical on every machine for the same seed.

    Conv weights ~ N(0, 2/fan_in) keep activations O(1) through the 20-odd backbone layers;
    norm scales near 1, small biases, positive BN variances; the loc head is biased so that the
    predicted distances span a few to a few hundred frames (exercising the pooling regions); use
    a smaller ``loc_bias`` for ActivityNet, whose distances are also multiplied by 4…128.
    """
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape, dtype in layout:
        if dtype == "int64":
            state[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        normal = torch.randn(shape, generator=generator, dtype=torch.float64)
        if key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
        elif key.endswith("running_mean"):
            value = 0.1 * normal
        elif key.endswith(".scale"):  # loc_heads.<level>.scale: coarser levels reach further
            value = 0.8 + 0.12 * int(key.split(".")[-2]) + 0.05 * normal
        elif key.endswith("loc_head.conv1d.bias"):  # distances of a few to a few hundred frames
            value = loc_bias + 0.3 * normal
        elif len(shape) >= 3:  # conv weight
            fan_in = math.prod(shape[1:])
            value = normal * math.sqrt(2.0 / fan_in)
        elif key.endswith("weight"):  # BN / GroupNorm scale
            value = 1.0 + 0.1 * normal
        else:  # biases
            value = 0.05 * normal
        state[key] = value.to(torch.float32)
    return state


def generated_clip(shape, seed: int = 1) -> torch.Tensor:
    """A clip in [-1, 1]: smooth moving pattern plus noise, so features vary along time."""
    generator = torch.Generator().manual_seed(seed)
    _, channels, frames, height, width = shape
    t = torch.arange(frames, dtype=torch.float64).view(1, 1, -1, 1, 1)
    y = torch.arange(height, dtype=torch.float64).view(1, 1, 1, -1, 1)
    x = torch.arange(width, dtype=torch.float64).view(1, 1, 1, 1, -1)
    phase = torch.arange(channels, dtype=torch.float64).view(1, -1, 1, 1, 1)
    wave = torch.sin(0.05 * t * (1 + phase) + 0.2 * x - 0.1 * y) * torch.cos(0.013 * t + 0.07 * y)
    noise = torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1
    return (0.7 * wave + 0.3 * noise).clamp(-1, 1).to(torch.float32)


def _subsample_indices(numel: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(numel)
    return torch.randperm(numel, generator=generator)[: min(SUBSAMPLE, numel)].sort().values.numpy()


def summarise_outputs(outputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """float32 arrays to store / compare: small outputs whole, large ones as sums + subsample."""
    summary: dict[str, np.ndarray] = {}
    for name in OUTPUT_NAMES:
        array = outputs[name].detach().to(torch.float64).cpu().numpy()
        if name in LARGE_OUTPUTS:
            flat = array.reshape(-1)
            summary[f"{name}__shape"] = np.asarray(array.shape, dtype=np.int64)
            summary[f"{name}__sum"] = np.asarray([flat.sum(), np.abs(flat).sum(), (flat**2).sum()], dtype=np.float64)
            summary[f"{name}__sample"] = flat[_subsample_indices(flat.size)].astype(np.float32)
        else:
            summary[name] = array.astype(np.float32)
    return summary
