"""Inputs of the inference parity tests, generated from seeds (nothing but numbers is committed).

The same functions produced the official outputs in ``tests/data/inference_parity/``: the
official AFSD ``thumos14/test.py`` was run once on CPU (outside the repository) with these
weights and arrays; the tests regenerate them and compare our outputs to the official JSON.
"""

from __future__ import annotations

import zlib
from typing import Iterable

import numpy as np

#: (video name, number of 10 fps frames): one shorter than a window (zero padded), one with a
#: strided window and a tail window (offsets 0, 128, 134).
PARITY_VIDEOS: tuple[tuple[str, int], ...] = (("video_parity_short", 200), ("video_parity_long", 390))
RGB_SEED = 1505
FLOW_SEED = 1606
DATA_SEED = 77


def seeded_state_dict(layout: Iterable[tuple[str, tuple[int, ...], str]], seed: int) -> dict:
    """Deterministic AFSD weights for a ``(name, shape, dtype)`` layout.

    Each tensor depends only on its name, shape and the seed (not on the order of the layout).
    Scales keep activations in a sensible range: He-normal convolutions, normalisation layers
    near identity, positive running variances, and a head whose boundary distances come out at
    ~10-30 frames, so that decoded segments overlap and soft-NMS has real work to do.
    """
    import torch

    state = {}
    for name, shape, dtype in layout:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        shape = tuple(shape)
        if "num_batches_tracked" in name:
            state[name] = torch.zeros(shape, dtype=torch.int64)
            continue

        def normal(std: float, mean: float = 0.0) -> "torch.Tensor":
            return torch.randn(shape, generator=generator) * std + mean

        def uniform(low: float, high: float) -> "torch.Tensor":
            return torch.rand(shape, generator=generator) * (high - low) + low

        if name.endswith("running_var"):
            value = uniform(0.5, 1.5)
        elif name.endswith("running_mean"):
            value = normal(0.1)
        elif name.endswith(".scale"):  # ScaleExp
            value = uniform(0.9, 1.1)
        elif name.endswith(("conv1d.bias", "conv3d.bias")):
            if name.startswith("coarse_pyramid_detection.loc_head."):
                value = normal(0.3, mean=2.5)  # exp(2.5) ~ 12 frames from the centre
            else:
                value = normal(0.1)
        elif len(shape) >= 2:  # convolution weights
            fan_in = int(np.prod(shape[1:]))
            head = any(f"detection.{h}." in name for h in ("loc_head", "conf_head", "center_head",
                                                            "prop_loc_head", "prop_conf_head"))
            value = normal(((0.5 if head else 2.0) / fan_in) ** 0.5)
        elif name.endswith("weight"):  # BatchNorm / GroupNorm scale
            value = uniform(0.8, 1.2)
        else:  # BatchNorm / GroupNorm shift
            value = normal(0.1)
        state[name] = value.to(getattr(torch, str(dtype).replace("torch.", "")))
    return state


def state_dict_layout(state_dict: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, shape, dtype)`` of every entry of a model's state dict, in order."""
    return [(name, tuple(t.shape), str(t.dtype)) for name, t in state_dict.items()]


def parity_array(name: str, frames: int, channels: int, seed: int = DATA_SEED) -> np.ndarray:
    """A deterministic ``uint8 [frames, 112, 112, channels]`` array with temporal structure.

    Smooth moving blobs plus noise, so that the network sees changes over time (random noise
    alone gives near-constant features and tied scores).
    """
    rng = np.random.default_rng(seed * 7919 + zlib.crc32(f"{name}/{channels}".encode()))
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    yy, xx = np.mgrid[0:112, 0:112].astype(np.float32)
    out = np.empty((frames, 112, 112, channels), dtype=np.uint8)
    for c in range(channels):
        period = rng.uniform(20, 80)
        cx = 56 + 40 * np.sin(2 * np.pi * t / period + rng.uniform(0, 6.28))
        cy = 56 + 40 * np.cos(2 * np.pi * t / (period * 1.3) + rng.uniform(0, 6.28))
        blob = np.exp(-((xx[None] - cx) ** 2 + (yy[None] - cy) ** 2) / (2 * 18.0 ** 2))
        # on/off "actions": the blob is bright only in some temporal stretches
        gate = (np.sin(2 * np.pi * t / rng.uniform(60, 150)) > 0.2).astype(np.float32)
        value = 40 + 180 * blob * (0.3 + 0.7 * gate) + rng.normal(0, 12, size=(frames, 112, 112))
        out[..., c] = np.clip(value, 0, 255).astype(np.uint8)
    return out


def video_info_csv() -> str:
    """The video-info CSV of the parity videos (THUMOS14 layout, 30 fps natively)."""
    lines = ["video,fps,sample_fps,count,sample_count"]
    for name, frames in PARITY_VIDEOS:
        lines.append(f"{name},30.0,10.0,{float(frames * 3)},{frames}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- ActivityNet
# The official AFSD ``anet/test.py`` / ``test_fusion.py`` were run once on these inputs.

#: (video id, frames, fps, duration s): one shorter than the 768-frame window (padded, its tail
#: detections clipped to a duration a little shorter than frames / fps), one longer (truncated
#: to its first 768 frames, as the official single-window procedure does).
ANET_VIDEOS: tuple[tuple[str, int, float, float], ...] = (
    ("v_parityShort01", 500, 6.4, 78.0),
    ("v_parityLong001", 900, 25.0, 36.0),
)
ANET_RGB_SEED = 2505
ANET_FLOW_SEED = 2606
ANET_CLASSIFIER_SEED = 31


def anet_video_info() -> dict:
    """``video_info_train_val.json`` content for the ANet parity videos (validation subset), plus
    one training video that inference must skip."""
    info = {name: {"subset": "validation", "frame_num": frames, "fps": fps, "duration": duration,
                   "annotations": []}
            for name, frames, fps, duration in ANET_VIDEOS}
    info["v_parityTrain01"] = {"subset": "training", "frame_num": 768, "fps": 10.0, "duration": 76.8,
                               "annotations": []}
    return info


def anet_classifier(class_names: list[str], seed: int = ANET_CLASSIFIER_SEED) -> dict:
    """A CUHK-format video classification file: ``{"results": {id without v_: [scores]}, "class": names}``."""
    rng = np.random.default_rng(seed)
    results = {}
    for name, *_ in ANET_VIDEOS:
        scores = rng.dirichlet(np.full(len(class_names), 0.2))
        results[name[2:]] = [round(float(s), 6) for s in scores]
    return {"results": results, "class": list(class_names)}


def assert_same_detections(ours: dict, theirs: dict) -> None:
    """Our detections per video against an official results file: same videos in the same order,
    same counts, labels and order, scores and segments within float tolerance."""
    assert list(ours) == list(theirs["results"])
    for video, expected in theirs["results"].items():
        got = ours[video]
        assert len(got) == len(expected), video
        assert [d["label"] for d in got] == [d["label"] for d in expected], video
        got_scores = np.array([d["score"] for d in got])
        exp_scores = np.array([d["score"] for d in expected])
        np.testing.assert_allclose(got_scores, exp_scores, rtol=1e-5, atol=1e-6, err_msg=video)
        # Segments are in seconds: float32 convolution sums differ between CPU kernels (AVX2 vs
        # AVX-512/AMX builds of the same PyTorch), which moved an ActivityNet boundary by 1.7e-5 s
        # on an AMX machine; 0.1 ms is still far below one frame.
        got_segments = np.array([d["segment"] for d in got])
        exp_segments = np.array([d["segment"] for d in expected])
        np.testing.assert_allclose(got_segments, exp_segments, rtol=1e-5, atol=1e-4, err_msg=video)
