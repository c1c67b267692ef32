"""Every loss term and the target assignment against the official training goldens."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from afsd_cli.engine import losses as L
from afsd_cli.engine.targets import build_targets, match_priors, proposal_targets

GOLDEN = Path(__file__).parent / "data" / "golden_training"
OUTPUT_NAMES = ("loc", "conf", "priors", "prop_loc", "prop_conf", "center", "start", "end",
                "start_loc_prop", "end_loc_prop", "start_conf_prop", "end_conf_prop")
SETTINGS = L.LossSettings.official("sliding", num_classes=21, clip_length=256, lw=10.0, cw=1.0, piou=0.5, ssl=0.1)


@pytest.fixture(scope="module")
def case():
    arrays = np.load(GOLDEN / "loss_case.npz")
    data = {name: arrays[name] for name in arrays.files}
    return data, json.loads((GOLDEN / "loss_case.json").read_text())


def _outputs(data, requires_grad=False):
    tensors = {n: torch.from_numpy(data["out_" + n].copy()) for n in OUTPUT_NAMES}
    if requires_grad:
        for n in OUTPUT_NAMES:
            if n != "priors":
                tensors[n].requires_grad_(True)
    return SimpleNamespace(**tensors)


@pytest.mark.parametrize("which", ["a", "b"])
def test_target_assignment(case, which):
    data, info = case
    out = _outputs(data)
    targets = build_targets(out.loc, out.priors, [torch.from_numpy(data[f"{which}_targets"])], 256, 0.5)
    np.testing.assert_array_equal(targets.conf[0].numpy(), data[f"{which}_diag_conf_t"])
    np.testing.assert_array_equal(targets.prop_conf[0].numpy(), data[f"{which}_diag_prop_conf_t"])
    np.testing.assert_allclose(targets.loc[0].numpy(), data[f"{which}_diag_loc_t"], rtol=1e-6, atol=1e-5)
    diag = info[f"case_{which.upper()}"]["matcher_diagnostics"]
    assert int((targets.conf > 0).sum()) == diag["num_pos_N"]
    assert int((targets.prop_conf > 0).sum()) == diag["num_prop_pos_PN"]


@pytest.mark.parametrize("which", ["a", "b"])
def test_each_term(case, which):
    data, info = case
    expected = info[f"case_{which.upper()}"]
    out = _outputs(data)
    target = [torch.from_numpy(data[f"{which}_targets"])]
    seg = build_targets(out.loc, out.priors, target, 256, 0.5)
    positive, prop_positive = seg.conf > 0, seg.prop_conf > 0
    n, pn = positive.sum().float(), prop_positive.sum().float()
    unweighted = expected["unweighted"]
    got = {
        "loc": L.coarse_boundary_loss(out.loc, seg.loc, positive) / n,
        "conf": L.coarse_classification_loss(out.conf, seg.conf) / n,
        "prop_loc": L.refined_boundary_loss(out.prop_loc, seg.prop_loc, prop_positive) / pn,
        "prop_conf": L.refined_classification_loss(out.prop_conf, seg.prop_conf) / pn,
        "center": L.quality_loss(out.center, out.loc, out.prop_loc, seg.loc, positive) / n,
    }
    for name, value in got.items():
        assert value.item() == pytest.approx(unweighted[name], rel=1e-5), name
    parts = L.activity_guided_boundary_losses(out, torch.from_numpy(data[f"{which}_scores"]), SETTINGS)
    for name, value in expected["start_end_subterms"].items():
        if name != "formula":
            assert parts[name].item() == pytest.approx(value, rel=1e-5), name
    assert parts["start"].item() == pytest.approx(unweighted["start"], rel=1e-5)
    assert parts["end"].item() == pytest.approx(unweighted["end"], rel=1e-5)
    # the quality IoU target is iou(refined, target), clamped at 0
    coarse, refine = out.loc[positive], out.prop_loc[positive]
    refined = 0.5 * (coarse[:, :1] + coarse[:, 1:]) * refine + coarse
    from afsd_cli.engine.targets import segment_iou
    np.testing.assert_allclose(segment_iou(refined, seg.loc[positive]).clamp(min=0).numpy(),
                               data[f"{which}_diag_center_iou_target"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["a", "b"])
def test_weighted_total_and_gradients(case, which):
    data, info = case
    expected = info[f"case_{which.upper()}"]
    out = _outputs(data, requires_grad=True)
    terms = L.detection_losses(out, [torch.from_numpy(data[f"{which}_targets"])],
                               torch.from_numpy(data[f"{which}_scores"]), SETTINGS)
    weighted = L.weighted_terms(terms, SETTINGS)
    for name, value in expected["weighted"].items():
        assert weighted[name].item() == pytest.approx(value, rel=1e-5), name
    total = L.weighted_total(terms, SETTINGS)
    assert total.item() == pytest.approx(expected["total_without_ssl"], rel=1e-5)
    total.backward()
    for name in OUTPUT_NAMES:
        if name != "priors":
            grad = getattr(out, name).grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_quality_target_is_not_detached():
    # as MultiSegmentLoss.forward: the IoU target keeps its graph, so the quality term also moves loc
    loc = torch.tensor([[10.0, 12.0]], requires_grad=True)
    prop = torch.tensor([[0.1, -0.2]], requires_grad=True)
    center = torch.tensor([[[0.3]]], requires_grad=True)
    loss = L.quality_loss(center, loc.view(1, 1, 2), prop.view(1, 1, 2), torch.tensor([[[11.0, 9.0]]]),
                          torch.tensor([[True]]))
    loss.backward()
    assert loc.grad.abs().sum() > 0 and prop.grad.abs().sum() > 0


def test_focal_loss_definition():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.1, 3.0]])
    target = torch.tensor([0, 2])
    p = torch.softmax(logits, -1)
    pt = torch.stack([p[0, 0], p[1, 2]]) + 1e-6
    alpha = torch.tensor([0.25, 0.75])
    expected = (-alpha * (1 - pt) ** 2 * pt.log()).sum()
    assert L.focal_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_anet_matching_uses_scale_ranges_and_adaptive_piou():
    # one GT of 40 frames: only level-1 priors (15 < max(l, r) <= 60) may match it
    priors = torch.tensor([[0.5, 0.0], [0.5, 1.0], [0.5, 4.0]])
    truths = torch.tensor([[0.5 - 20 / 768, 0.5 + 20 / 768]])
    from afsd_cli.engine.targets import prior_scale_bounds
    bounds = prior_scale_bounds(priors[:, 1], L.LossSettings.official("single_clip", num_classes=2).scale_ranges)
    loc_t, conf_t = match_priors(priors[:, 0], truths, torch.tensor([1.0]), 768, bounds)
    assert conf_t.tolist() == [1, 1, 0]  # level 0 range [0, 30] holds 20 too; level 4 needs > 96
    # every positive predicts poorly (IoU 0.25): fixed piou drops all, adaptive keeps the best
    pred = torch.tensor([[5.0, 5.0], [5.0, 5.0], [5.0, 5.0]])
    _, fixed = proposal_targets(pred, loc_t, conf_t, 0.6, adaptive=False)
    _, adaptive = proposal_targets(pred, loc_t, conf_t, 0.6, adaptive=True)
    assert fixed.tolist() == [0, 0, 0] and adaptive.tolist() == [1, 1, 0]


@pytest.mark.parametrize("which", ["a", "b"])
def test_consistency_triplet_term(which):
    arrays = np.load(GOLDEN / "triplet_case.npz")
    info = json.loads((GOLDEN / "triplet_case.json").read_text())["cases"][which.upper()]
    features = [torch.from_numpy(arrays[f"{which}_{name}"]) for name in
                ("top_feat0_frame_level", "top_feat1_loc_prop", "top_feat2_conf_prop")]
    proposals = torch.from_numpy(arrays[f"{which}_ssl_targets"])
    for level, (segments, anchor, positive, negative) in enumerate(L.consistency_triplets(features, proposals)):
        np.testing.assert_array_equal(segments.numpy(), arrays[f"{which}_bmp_segments_level{level}"])
        np.testing.assert_allclose(anchor.numpy(), arrays[f"{which}_anchor_level{level}"], atol=1e-6)
        np.testing.assert_allclose(positive.numpy(), arrays[f"{which}_positive_level{level}"], atol=1e-6)
        np.testing.assert_allclose(negative.numpy(), arrays[f"{which}_negative_level{level}"], atol=1e-6)
    total, levels = L.consistency_loss(features, proposals)
    np.testing.assert_allclose([v.item() for v in levels], info["triplet_levels_unweighted"], atol=1e-5)
    assert total.item() == pytest.approx(info["trip_loss_forward_one_epoch"], abs=1e-5)
    assert (SETTINGS.ssl * total).item() == pytest.approx(info["loss_trip_in_cost"], abs=1e-5)


def test_legacy_pooling_gradient_is_an_option():
    # same forward, different (official, misrouted) backward through the consistency pooling
    arrays = np.load(GOLDEN / "triplet_case.npz")
    grads = {}
    for legacy in (False, True):
        features = [torch.from_numpy(arrays[f"a_{name}"].copy()).requires_grad_(True) for name in
                    ("top_feat0_frame_level", "top_feat1_loc_prop", "top_feat2_conf_prop")]
        total, _ = L.consistency_loss(features, torch.from_numpy(arrays["a_ssl_targets"]), legacy_grad=legacy)
        total.backward()
        grads[legacy] = (total.item(), features[0].grad.clone())
    assert grads[False][0] == grads[True][0]
    assert not torch.equal(grads[False][1], grads[True][1])
    # the correct gradient lands only inside the pooled ranges of the frame feature
    segments = arrays["a_bmp_segments_level0"][0].astype(int)  # integral at level 0
    allowed = set()
    for lo, hi in [(segments[0, 2], segments[0, 3]), (segments[1, 0], segments[1, 1]), (segments[2, 0], segments[2, 1])]:
        allowed.update(range(max(lo, 0), min(hi, 255) + 1))
    touched = set(torch.nonzero((grads[False][1] != 0).any(dim=1)[0]).flatten().tolist())
    assert touched and touched <= allowed


@pytest.mark.parametrize("which", ["a", "b"])
def test_total_with_consistency_term(case, which):
    # the loss case and the triplet case are the same official step: the sum must match too
    data, info = case
    arrays = np.load(GOLDEN / "triplet_case.npz")
    out = _outputs(data)
    terms = L.detection_losses(out, [torch.from_numpy(data[f"{which}_targets"])],
                               torch.from_numpy(data[f"{which}_scores"]), SETTINGS)
    features = [torch.from_numpy(arrays[f"{which}_{name}"]) for name in
                ("top_feat0_frame_level", "top_feat1_loc_prop", "top_feat2_conf_prop")]
    terms["trip"], _ = L.consistency_loss(features, torch.from_numpy(arrays[f"{which}_ssl_targets"]))
    expected = info[f"case_{which.upper()}"]
    assert L.weighted_terms(terms, SETTINGS)["trip"].item() == pytest.approx(
        expected["ssl"]["loss_trip_after_ssl_weight"], abs=1e-6)
    assert L.weighted_total(terms, SETTINGS).item() == pytest.approx(expected["total_with_ssl"], rel=1e-5)
