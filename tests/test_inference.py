"""Inference against the official implementation (RGB, flow, fusion) and batch-size invariance.

``tests/data/inference_parity/{rgb,flow,fusion}.json.gz`` are the outputs of the official
``AFSD/thumos14/test.py`` (run once on CPU, its CUDA op replaced by a pure-PyTorch stand-in) on
the seeded weights and arrays of ``tests/inference_parity.py``. Here the same inputs go through
our model and ``Predictor``; the detections must match: same videos, labels, order, scores and
segments within float tolerance.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import helpers.inference_parity as P
from afsd_cli.data.annotations import thumos14_class_index
from afsd_cli.engine.inference import Predictor, center_crop, normalised_window, window_offsets
from afsd_cli.engine.jobs import LoadedVideo, VideoJob, check_array_files
from afsd_cli.engine.postprocess import PostprocessSettings
from afsd_cli.errors import ConfigError, InputError
from afsd_cli.model import AFSD, thumos14_spec

PARITY_DIR = Path(__file__).parent / "data" / "inference_parity"


class CachedModel(torch.nn.Module):
    """Wraps a model and remembers its output per input window, so that the RGB, flow and
    fusion checks run each network only once per window (the forward pass is the slow part)."""

    def __init__(self, model: AFSD):
        super().__init__()
        self.model = model
        self.spec = model.spec
        self.cache: dict[str, object] = {}
        self.calls = 0

    def forward(self, clip: torch.Tensor):
        key = hashlib.sha1(clip.detach().cpu().numpy().tobytes()).hexdigest()
        if key not in self.cache:
            self.calls += 1
            self.cache[key] = self.model(clip)
        return self.cache[key]


def seeded_model(channels: int, seed: int, **sizes) -> AFSD:
    model = AFSD(thumos14_spec(in_channels=channels, **sizes))
    model.load_state_dict(P.seeded_state_dict(P.state_dict_layout(model.state_dict()), seed))
    return model.eval()


def parity_jobs(channels: list[int]) -> list[VideoJob]:
    return [VideoJob(name, lambda name=name, n=n: LoadedVideo([P.parity_array(name, n, c) for c in channels]),
                     10.0, n / 10.0, name)
            for name, n in P.PARITY_VIDEOS]


@pytest.fixture(scope="module")
def parity_models():
    return CachedModel(seeded_model(3, P.RGB_SEED)), CachedModel(seeded_model(2, P.FLOW_SEED))


def official(mode: str) -> dict:
    with gzip.open(PARITY_DIR / f"{mode}.json.gz", "rt", encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.parametrize("mode", ["rgb", "flow", "fusion"])
def test_thumos14_detections_equal_the_official_implementation(parity_models, mode):
    rgb, flow = parity_models
    models = {"rgb": [rgb], "flow": [flow], "fusion": [rgb, flow]}[mode]
    predictor = Predictor(models, PostprocessSettings(), thumos14_class_index().names,
                          clip_length=256, clip_stride=128, crop_size=96, fusion="average")
    results = list(predictor.run(parity_jobs([m.spec.in_channels for m in models])))
    assert [r.windows for r in results] == [1, 3]  # zero-padded short video; strided + tail windows
    assert all(r.error is None for r in results)
    P.assert_same_detections({r.key: r.detections for r in results}, official(mode))
    assert all(m.calls <= 4 for m in models)  # each window ran through each network once


def test_detections_do_not_depend_on_the_batch_size():
    model = seeded_model(3, 11, clip_length=64, crop_size=32)
    jobs = [VideoJob(name, lambda name=name, n=n: LoadedVideo([P.parity_array(name, n, 3)[:: 3]]), 10.0, None, name)
            for name, n in (("a", 150), ("b", 300))]  # 50 and 100 frames: 1 and 3 windows of 64
    settings = PostprocessSettings(clip_length=64)
    kwargs = dict(clip_length=64, clip_stride=32, crop_size=32)
    names = thumos14_class_index().names
    torch.manual_seed(0)
    one = list(Predictor([model], settings, names, batch_size=1, **kwargs).run(jobs))
    three = list(Predictor([model], settings, names, batch_size=3, **kwargs).run(jobs, postprocess_workers=1))
    assert [r.windows for r in one] == [1, 3]  # batches of 3 mix the two videos
    assert sum(len(r.detections) for r in one) > 0
    for a, b in zip(one, three):
        assert a.key == b.key and [d["label"] for d in a.detections] == [d["label"] for d in b.detections]
        np.testing.assert_allclose([[d["score"], *d["segment"]] for d in a.detections],
                                   [[d["score"], *d["segment"]] for d in b.detections], rtol=1e-4, atol=1e-5)
    # with deterministic kernels the fp32 results are bit-identical whatever the batch size
    exact = [list(Predictor([model], settings, names, batch_size=b, deterministic=True, **kwargs).run(jobs))
             for b in (1, 3)]
    assert [r.detections for r in exact[0]] == [r.detections for r in exact[1]]
    assert [len(r.detections) for r in exact[0]] == [len(r.detections) for r in one]


def test_windows_crop_and_normalisation():
    assert window_offsets(200, 256, 128, False) == [0]
    assert window_offsets(390, 256, 128, False) == [0, 128, 134]
    assert window_offsets(384, 256, 128, False) == [0, 128]
    assert window_offsets(5000, 768, 768, True) == [0]
    frames = np.arange(2 * 112 * 112 * 3, dtype=np.int64).reshape(2, 112, 112, 3).astype(np.uint8)
    clip = center_crop(frames, 96)
    assert clip.shape == (3, 2, 96, 96)
    assert np.array_equal(clip[:, :, 0, 0], frames[:, 8, 8].T)
    window = normalised_window(clip, 0, 4)
    assert window.shape == (3, 4, 96, 96)
    assert torch.equal(window[:, 2:], torch.zeros(3, 2, 96, 96))  # padded after normalisation: 0.0
    assert window[0, 0, 0, 0].item() == pytest.approx(frames[0, 8, 8, 0] / 255.0 * 2 - 1)


def test_bad_arrays_are_reported_before_running(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((10, 112, 112, 3), np.uint8))
    np.save(tmp_path / "float.npy", np.zeros((10, 112, 112, 3), np.float32))
    np.save(tmp_path / "flowlike.npy", np.zeros((10, 112, 112, 2), np.uint8))
    (tmp_path / "corrupt.npy").write_bytes(b"not an array")
    jobs = [VideoJob(n, lambda: LoadedVideo([]), 10.0) for n in ("good", "float", "flowlike", "corrupt", "missing")]
    problems = check_array_files(jobs, [tmp_path], [3], 96, expected_frames={"good": 12})
    text = "\n".join(problems)
    assert len(problems) == 5
    assert "good.npy: has 10 frames" in text and "float32" in text and "[T, H, W, 3]" in text
    assert "corrupt.npy" in text and "missing.npy: array file not found" in text


def test_predictor_rejects_bad_settings():
    model = seeded_model(3, 1, clip_length=64, crop_size=32)
    with pytest.raises(ConfigError, match="CUDA"):
        Predictor([model], PostprocessSettings(), None, 64, 16, 32, amp="bf16")
    with pytest.raises(ConfigError, match="batch size"):
        Predictor([model], PostprocessSettings(), None, 64, 16, 32, batch_size=0)
    # a video whose loader fails is reported, the others still run
    jobs = [VideoJob("bad", lambda: (_ for _ in ()).throw(InputError("cannot decode", "bad.mp4")), 10.0),
            VideoJob("ok", lambda: LoadedVideo([np.full((20, 112, 112, 3), 128, np.uint8)]), 10.0, 2.0)]
    results = list(Predictor([model], PostprocessSettings(clip_length=64), None, 64, 16, 32).run(jobs))
    assert results[0].error == "bad.mp4: cannot decode" and results[1].error is None
