"""Decoding, soft-NMS and detection assembly against the official behaviour (``AFSD/thumos14/test.py``,
``AFSD/anet/test.py``, ``softnms_v2`` in ``AFSD/common/segment_utils.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from afsd_cli.engine.postprocess import (
    PostprocessSettings,
    RawOutputs,
    VideoMeta,
    assemble_detections,
    decode,
    decode_fused,
    location_scores,
    refine_segments,
    relabel_with_classifier,
)
from afsd_cli.ops.soft_nms import soft_nms, soft_nms_torch


def masked_softnms(rows: torch.Tensor, sigma: float, top_k: int, score_threshold: float):
    """``softnms_v2`` written with boolean masks over the full arrays (as the official code)."""
    rows = rows.clone()
    start, end, score = rows[:, 0], rows[:, 1], rows[:, 2]
    done = torch.zeros(len(rows), dtype=torch.bool)
    undone = score >= score_threshold
    while int(undone.sum()) > 1 and int(done.sum()) < top_k:
        i = int(undone.nonzero()[score[undone].argmax()])
        undone[i] = False
        done[i] = True
        s, e = start[undone], end[undone]
        inter = torch.clamp(e.clamp(max=end[i]) - s.clamp(min=start[i]), min=0)
        iou = inter / (torch.clamp(end[i] - start[i], min=1e-5) + (e - s) - inter)
        score[undone] *= torch.exp(-iou ** 2 / sigma)
        undone[score < score_threshold] = False
    return torch.stack([start[done], end[done], score[done]], -1)


def random_candidates(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, generator=g) * 50
    length = torch.rand(n, generator=g) * 10 + 0.1
    score = torch.rand(n, generator=g) * 0.1
    return torch.stack([start, start + length, score], -1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_nms_matches_the_official_algorithm(seed):
    rows = random_candidates(300, seed)
    expected = masked_softnms(rows, sigma=0.5, top_k=5000, score_threshold=0.001)
    exact = soft_nms_torch(rows, sigma=0.5, top_k=5000, score_threshold=0.001)
    assert exact.shape == expected.shape and len(exact) > 50
    assert torch.equal(exact, expected)  # the torch variant: bit for bit
    fast = soft_nms(rows, sigma=0.5, top_k=5000, score_threshold=0.001)
    assert fast.dtype == np.float32 and fast.shape == tuple(expected.shape)
    np.testing.assert_array_equal(fast[:, :2], expected[:, :2].numpy())  # same rows kept
    np.testing.assert_allclose(fast[:, 2], expected[:, 2].numpy(), rtol=1e-6)  # exp within an ulp or so
    assert torch.equal(rows, random_candidates(300, seed))  # the input is not modified


def test_soft_nms_decay_values_by_hand():
    rows = torch.tensor([[0.0, 10.0, 0.9], [5.0, 15.0, 0.8], [20.0, 30.0, 0.7], [40.0, 41.0, 0.1]])
    got = soft_nms(rows, sigma=0.5, top_k=10, score_threshold=0.001)
    # 0 kept first; 1 overlaps it with IoU 5/15 -> 0.8 * exp(-(1/3)^2 / 0.5); 2 and 3 untouched.
    # Then 1 (0.6404) is kept, then 2, leaving 3 alone: the official loop never emits it.
    assert got[:, :2].tolist() == [[0.0, 10.0], [5.0, 15.0], [20.0, 30.0]]
    assert got[1, 2].item() == pytest.approx(0.8 * math.exp(-(1 / 3) ** 2 / 0.5), rel=1e-6)
    assert got[0, 2].item() == pytest.approx(0.9) and got[2, 2].item() == pytest.approx(0.7)


def test_soft_nms_last_candidate_quirk_and_its_fix():
    single = torch.tensor([[1.0, 2.0, 0.5]])
    assert soft_nms(single).shape == (0, 3)
    fixed = soft_nms(single, emit_last=True)
    assert fixed.tolist() == [[1.0, 2.0, 0.5]]
    two = torch.tensor([[0.0, 1.0, 0.3], [5.0, 6.0, 0.6]])
    assert soft_nms(two).tolist() == [[5.0, 6.0, pytest.approx(0.6)]]
    assert len(soft_nms(two, emit_last=True)) == 2


def test_soft_nms_ties_threshold_and_top_k():
    # equal scores: the lowest index is taken first and decays the identical second copy
    rows = torch.tensor([[0.0, 10.0, 0.5], [0.0, 10.0, 0.5], [50.0, 60.0, 0.2]])
    got = soft_nms(rows, score_threshold=0.001)
    assert got.tolist() == [[0.0, 10.0, 0.5], [50.0, 60.0, pytest.approx(0.2)]]
    got = soft_nms(rows, score_threshold=0.001, emit_last=True)
    assert got[1, 2].item() == pytest.approx(0.5 * math.exp(-1 / 0.5), rel=1e-6)
    # below the score threshold from the start: never considered
    low = torch.tensor([[0.0, 1.0, 0.0005], [3.0, 4.0, 0.5], [6.0, 7.0, 0.4]])
    assert soft_nms(low, score_threshold=0.001)[:, 2].tolist() == [pytest.approx(0.5)]
    # top_k caps the number kept
    many = random_candidates(50, 7)
    assert len(soft_nms(many, top_k=5)) == 5
    np.testing.assert_allclose(soft_nms(many, top_k=5), masked_softnms(many, 0.5, 5, 0.001).numpy(), rtol=1e-6)


def test_refine_segments_by_hand():
    # prior centre 0.5 of a 256-frame clip = frame 128; coarse (l, r) = (10, 30), offsets (0.1, -0.2)
    loc = torch.tensor([[[10.0, 30.0]]])
    prop = torch.tensor([[[0.1, -0.2]]])
    priors = torch.tensor([[0.5]])
    seg = refine_segments(loc, prop, priors, 256)
    # width 40 -> l = 10 + 20*0.1 = 12, r = 30 - 20*0.2 = 26
    assert seg.tolist() == [[[116.0, 154.0]]]
    # clamped to [0, clip_length]
    seg = refine_segments(torch.tensor([[[200.0, 200.0]]]), torch.zeros(1, 1, 2), priors, 256)
    assert seg.tolist() == [[[0.0, 256.0]]]


def test_location_scores_formula():
    conf = torch.tensor([[0.0, 1.0, 2.0]])
    prop = torch.tensor([[2.0, 0.0, -1.0]])
    center = torch.tensor([[0.5]])
    got = location_scores(conf, prop, center)
    expected = (torch.softmax(conf, -1) + torch.softmax(prop, -1)) / 2 * torch.sigmoid(center)
    assert torch.allclose(got, expected)
    assert got[0, 2].item() == pytest.approx(
        (math.exp(2) / (1 + math.e + math.exp(2)) + math.exp(-1) / (math.exp(2) + 1 + math.exp(-1))) / 2
        / (1 + math.exp(-0.5)), rel=1e-6)


def _raw(seed: int, windows: int = 2, k: int = 6, classes: int = 3) -> RawOutputs:
    g = torch.Generator().manual_seed(seed)
    return RawOutputs(
        loc=torch.rand(windows, k, 2, generator=g) * 40 + 1,
        conf=torch.randn(windows, k, classes, generator=g),
        prop_loc=torch.randn(windows, k, 2, generator=g) * 0.1,
        prop_conf=torch.randn(windows, k, classes, generator=g),
        center=torch.randn(windows, k, 1, generator=g),
        priors=((torch.arange(k, dtype=torch.float32) + 0.5) / k).view(k, 1),
    )


def test_fusion_modes():
    rgb, flow = _raw(1), _raw(2)
    seg_avg, sc_avg = decode_fused(rgb, flow, "average", 256)
    averaged = RawOutputs(*[(a + b) / 2.0 for a, b in zip(rgb[:5], flow[:5])], priors=rgb.priors)
    seg, sc = decode(averaged, 256)
    assert torch.equal(seg_avg, seg) and torch.equal(sc_avg, sc)
    seg_geo, sc_geo = decode_fused(rgb, flow, "geometric", 256)
    seg_r, _ = decode(rgb, 256)
    seg_f, _ = decode(flow, 256)
    assert torch.allclose(seg_geo, torch.sqrt(seg_r * seg_f))
    assert torch.equal(sc_geo, sc_avg)


def test_assemble_detections_order_labels_and_seconds():
    raw = _raw(3)
    segments, scores = decode(raw, 256)
    settings = PostprocessSettings(candidate_thresh=0.05, nms_score_thresh=0.001, emit_last=True)
    dets = assemble_detections(segments, scores, [0, 128], VideoMeta("v", 10.0), settings, ["a", "b"])
    assert dets and {d["label"] for d in dets} <= {"a", "b"}
    # labels come in class order, all "a" before any "b"
    labels = [d["label"] for d in dets]
    assert labels == sorted(labels)
    # every detection is a candidate of its window, converted to seconds with the offset
    for det in dets:
        cls = 1 + ["a", "b"].index(det["label"])
        found = False
        for w, offset in enumerate([0, 128]):
            expected = ((segments[w] + offset) / 10.0)
            match = (torch.isclose(expected[:, 0], torch.tensor(det["segment"][0]))
                     & torch.isclose(expected[:, 1], torch.tensor(det["segment"][1])))
            found |= bool((match & (scores[w, :, cls] > 0.05)).any())
        assert found
    counts = {name: sum(d["label"] == name for d in dets) for name in ("a", "b")}
    for cls, name in ((1, "a"), (2, "b")):
        assert counts[name] == int((scores[..., cls] > 0.05).sum())  # emit_last + no decay below thresh


def test_clip_to_video_and_anet_relabel():
    raw = _raw(4, windows=1)
    raw = raw._replace(loc=raw.loc + 60)  # long segments that run past both ends
    segments, scores = decode(raw, 256)
    base = PostprocessSettings(candidate_thresh=0.0)
    meta = VideoMeta("v", 10.0, duration=12.0)
    plain = assemble_detections(segments, scores, [0], meta, base, ["a", "b"])
    assert any(d["segment"][1] > 12.0 for d in plain)
    clipped = assemble_detections(segments, scores, [0], meta,
                                  PostprocessSettings(candidate_thresh=0.0, clip_to_video=True), ["a", "b"])
    assert clipped and all(0.0 <= d["segment"][0] < d["segment"][1] <= 12.0 for d in clipped)
    relabelled = relabel_with_classifier(plain, "Long jump", 0.5, duration=12.0)
    assert all(d["label"] == "Long jump" and d["segment"][1] <= 12.0 for d in relabelled)
    assert relabelled[0]["score"] == pytest.approx(plain[0]["score"] * 0.5)


@pytest.fixture
def native_soft_nms():
    from afsd_cli.ops import soft_nms as soft_nms_module

    library, error = soft_nms_module._native_soft_nms()
    if library is None:
        pytest.skip(f"native soft-NMS unavailable: {error}")
    return soft_nms_module


def _awkward_candidates(n: int, seed: int) -> np.ndarray:
    """Random rows plus exact ties, duplicates, zero-length, reversed and NaN segments."""
    rows = random_candidates(n, seed).numpy()
    rows[5] = rows[3]  # an exact duplicate
    rows[7, 2] = rows[2, 2]  # a tie in score
    rows[11, 1] = rows[11, 0]  # zero length
    rows[13, :2] = rows[13, 1::-1]  # end before start
    rows[17, 0] = np.nan  # a malformed segment: its score becomes NaN and it is dropped
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("emit_last", [False, True])
def test_native_soft_nms_equals_numpy_and_torch(native_soft_nms, seed, emit_last):
    rows = _awkward_candidates(400, seed)
    for top_k, threshold in ((5000, 0.001), (40, 0.001), (5000, 0.05)):
        native = native_soft_nms.soft_nms(rows, 0.5, top_k, threshold, emit_last)
        numpy_ = native_soft_nms.soft_nms_numpy(rows, 0.5, top_k, threshold, emit_last)
        exact = native_soft_nms.soft_nms_torch(torch.from_numpy(rows), 0.5, top_k, threshold, emit_last).numpy()
        assert native.shape == exact.shape == numpy_.shape and len(native) > 10
        np.testing.assert_array_equal(native[:, :2], exact[:, :2])  # the same rows kept, in order
        np.testing.assert_allclose(native[:, 2], exact[:, 2], rtol=1e-6)  # exp within an ulp or so
        np.testing.assert_allclose(native[:, 2], numpy_[:, 2], rtol=1e-6)


def test_native_soft_nms_edge_cases(native_soft_nms):
    nms = native_soft_nms.soft_nms
    assert nms(np.zeros((0, 3), np.float32)).shape == (0, 3)
    single = np.array([[1.0, 2.0, 0.9]], np.float32)
    assert nms(single).shape == (0, 3) and nms(single, emit_last=True).tolist() == [[1.0, 2.0, pytest.approx(0.9)]]
    disjoint = np.array([[0, 1, 0.5], [2, 3, 0.7], [4, 5, 0.6]], np.float32)  # scores untouched
    np.testing.assert_array_equal(nms(disjoint, emit_last=True), disjoint)
    assert nms(disjoint, top_k=0).shape == (0, 3)


def test_soft_nms_backend_switch(monkeypatch):
    from afsd_cli.errors import ConfigError
    from afsd_cli.ops import soft_nms as soft_nms_module

    monkeypatch.setenv(soft_nms_module.SOFTNMS_BACKEND_ENV, "numpy")
    assert soft_nms_module.soft_nms_backend()[0] == "numpy"
    rows = random_candidates(100, 4).numpy()
    np.testing.assert_array_equal(soft_nms_module.soft_nms(rows), soft_nms_module.soft_nms_numpy(rows))
    monkeypatch.setenv(soft_nms_module.SOFTNMS_BACKEND_ENV, "fast")
    with pytest.raises(ConfigError, match="AFSD_SOFTNMS_BACKEND"):
        soft_nms_module.soft_nms(rows)
