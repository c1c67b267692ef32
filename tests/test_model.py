"""The AFSD network: layout, shapes, presets, segment maths, BN freezing, build_model."""

from __future__ import annotations

import pytest
import torch
from helpers.model_fixtures import generated_clip, key_layout

from afsd_cli.errors import ConfigError, InputError
from afsd_cli.model import AFSD, ModelSpec, anet_spec, build_model, thumos14_spec
from afsd_cli.model import afsd as afsd_module
from afsd_cli.model.afsd import frame_segments, level_segments
from afsd_cli.model.layers import same_padding

SMALL_THUMOS = thumos14_spec(clip_length=64, crop_size=32, num_classes=5)
SMALL_ANET = anet_spec(clip_length=64, crop_size=32)


@pytest.fixture(scope="module")
def small_thumos():
    torch.manual_seed(0)
    return AFSD(SMALL_THUMOS).eval()


@pytest.mark.parametrize("variant", ["thumos14_rgb", "thumos14_flow", "anet_rgb", "anet_flow"])
def test_state_dict_layout_matches_official_checkpoints(variant):
    dataset, modality = variant.split("_")
    spec = (thumos14_spec if dataset == "thumos14" else anet_spec)(in_channels=3 if modality == "rgb" else 2)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = AFSD(spec)
    layout = [(key, list(value.shape), str(value.dtype).removeprefix("torch.")) for key, value in model.state_dict().items()]
    assert layout == [(key, shape, dtype) for key, shape, dtype in key_layout(variant)]


def test_same_padding_follows_tensorflow_rule():
    assert same_padding(64, 1, 1) == (0, 0)
    assert same_padding(64, 3, 1) == (1, 1)
    assert same_padding(64, 3, 2) == (0, 1)
    assert same_padding(65, 3, 2) == (1, 1)
    assert same_padding(3, 2, 2) == (0, 1)
    assert same_padding(96, 7, 2) == (2, 3)


def test_spec_derives_pyramid_from_clip_length():
    assert thumos14_spec().level_lengths == (64, 32, 16, 8, 4, 2)
    assert anet_spec().level_lengths == (96, 48, 24, 12, 6, 3)
    assert anet_spec().fpn_strides == (4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
    assert thumos14_spec().fpn_strides == (1.0,) * 6
    assert thumos14_spec().head.level0_stride == 4 and anet_spec().head.level0_stride == 8
    assert SMALL_THUMOS.level_lengths == (16, 8, 4, 2, 1)
    assert SMALL_ANET.level_lengths == (8, 4, 2, 1)
    assert thumos14_spec().feature_size("Mixed_4f") == 6 and thumos14_spec().feature_size("Mixed_5c") == 3
    assert SMALL_THUMOS.feature_size("Mixed_4f") == 2 and SMALL_THUMOS.feature_size("Mixed_5c") == 1
    assert anet_spec(num_classes=201).model_classes == 2


@pytest.mark.parametrize(
    "sizes", [dict(clip_length=100), dict(clip_length=0), dict(dataset="kinetics"), dict(num_classes=1)]
)
def test_spec_rejects_impossible_sizes(sizes):
    with pytest.raises(ConfigError):
        ModelSpec(**sizes)


def test_small_thumos_forward_shapes_and_priors(small_thumos):
    clip = generated_clip((2, 3, 64, 32, 32))
    with torch.no_grad():
        out = small_thumos(clip)
    locations = 16 + 8 + 4 + 2 + 1
    assert out.loc.shape == (2, locations, 2) and out.prop_loc.shape == (2, locations, 2)
    assert out.conf.shape == (2, locations, 5) and out.prop_conf.shape == (2, locations, 5)
    assert out.center.shape == (2, locations, 1)
    assert out.start.shape == out.end.shape == (2, 64, 256)
    assert out.start_loc_prop.shape == out.end_conf_prop.shape == (2, 16, 512)
    assert torch.all(out.loc > 0)  # exp of the scaled regression
    expected_priors = torch.cat([(torch.arange(t) + 0.5) / t for t in (16, 8, 4, 2, 1)])
    assert torch.allclose(out.priors.view(-1), expected_priors)
    # batch items are independent (GroupNorm, eval BN)
    with torch.no_grad():
        single = small_thumos(clip[1:])
    assert torch.allclose(single.conf[0], out.conf[1], atol=1e-5)


def test_small_anet_forward_priors_carry_level_and_two_classes():
    torch.manual_seed(0)
    model = AFSD(SMALL_ANET).eval()
    with torch.no_grad():
        out = model(generated_clip((1, 3, 64, 32, 32)))
    assert out.conf.shape == (1, 15, 2)
    assert out.priors.shape == (1, 15, 2)
    assert out.priors[0, :, 1].tolist() == [0.0] * 8 + [1.0] * 4 + [2.0] * 2 + [3.0]
    assert out.start.shape == (1, 64, 256) and out.start_conf_prop.shape == (1, 8, 512)


def test_consistency_features_are_the_level0_maps(small_thumos):
    clip = generated_clip((1, 3, 64, 32, 32), seed=5)
    with torch.no_grad():
        out = small_thumos(clip)
        frame, loc_boundary, conf_boundary = small_thumos.consistency_features(clip)
    assert frame.shape == (1, 512, 64) and loc_boundary.shape == conf_boundary.shape == (1, 1024, 16)
    assert torch.equal(frame[:, :256].transpose(1, 2), out.start)
    assert torch.equal(frame[:, 256:].transpose(1, 2), out.end)
    assert torch.equal(loc_boundary[:, 512:].transpose(1, 2), out.end_loc_prop)
    assert torch.equal(conf_boundary[:, :512].transpose(1, 2), out.start_conf_prop)


def test_wrong_clip_shape_is_a_clear_error(small_thumos):
    with pytest.raises(InputError, match=r"\[B, 3, 64, 32, 32\]"):
        small_thumos(torch.zeros(1, 3, 60, 32, 32))


def test_segments_match_the_spec_worked_example():
    # official CoarsePyramid.forward: level 0 (64 steps of a 256-frame clip), location 10, loc = (20, 28)
    loc = torch.zeros(1, 64, 2)
    loc[0, 10] = torch.tensor([20.0, 28.0])
    priors = ((torch.arange(64) + 0.5) / 64).view(1, 64, 1)
    assert level_segments(loc, priors, 64, 256)[0, 10].tolist() == [4.0, 8.0, 14.0, 18.0]
    assert frame_segments(loc, priors, 256)[0, 10].tolist() == [17.0, 34.0, 58.0, 75.0]


def test_segments_round_half_to_even():
    loc = torch.tensor([[[2.5, 0.5]]])  # centre frame 2: start -0.5, end 2.5 → length 4, in 1, out 1
    priors = torch.tensor([[[0.5]]])
    assert frame_segments(loc, priors, 4)[0, 0].tolist() == [-2.0, 0.0, 2.0, 4.0]


def test_freeze_bn_keeps_backbone_statistics_and_affine_fixed(small_thumos):
    model = small_thumos.train()  # built with the defaults freeze_bn=True, freeze_bn_affine=True
    try:
        bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm3d)]
        assert len(bns) == 57
        assert all(not bn.training and not bn.weight.requires_grad and not bn.bias.requires_grad for bn in bns)
        assert model.training and model.coarse_pyramid_detection.training
        assert model.backbone._model.Conv3d_1a_7x7.conv3d.weight.requires_grad
        before = bns[0].running_mean.clone()
        out = model(generated_clip((1, 3, 64, 32, 32)))
        assert torch.equal(bns[0].running_mean, before)

        # gradients reach the backbone convs and every part of the head
        (out.loc.sum() + out.conf.square().sum() + out.prop_conf.sum() + out.center.sum() + out.start.mean()).backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
        assert grads["backbone._model.Conv3d_1a_7x7.conv3d.weight"].abs().sum() > 0
        assert grads["coarse_pyramid_detection.loc_proposal_branch.roi_conv.0.conv1d.weight"].abs().sum() > 0
        assert grads["coarse_pyramid_detection.loc_heads.0.scale"].abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_bn_freezing_can_be_switched_off():
    with torch.device("meta"):
        affine_trained = AFSD(SMALL_THUMOS, freeze_bn=True, freeze_bn_affine=False).train()
    bn = affine_trained.backbone._model.Mixed_5c.b0.bn
    assert not bn.training and bn.weight.requires_grad

    affine_trained.backbone.freeze_bn = False
    affine_trained.train()
    assert all(m.training for m in affine_trained.backbone.modules() if isinstance(m, torch.nn.BatchNorm3d))


def test_legacy_bmp_grad_flag_reaches_the_op(monkeypatch, small_thumos):
    seen = []
    real = afsd_module.boundary_max_pool

    def spy(x, segments, legacy_grad=False):
        seen.append(legacy_grad)
        return real(x, segments)

    monkeypatch.setattr(afsd_module, "boundary_max_pool", spy)
    clip = generated_clip((1, 3, 64, 32, 32))
    assert not small_thumos.legacy_bmp_grad
    with torch.no_grad():
        small_thumos(clip)
    assert len(seen) == 4 * 5 and not any(seen)  # 2 branches × 2 poolings × 5 levels
    seen.clear()
    small_thumos.legacy_bmp_grad = True
    try:
        with torch.no_grad():
            small_thumos(clip)
    finally:
        small_thumos.legacy_bmp_grad = False
    assert len(seen) == 4 * 5 and all(seen)
    with torch.device("meta"):
        assert AFSD(SMALL_THUMOS, legacy_bmp_grad=True).legacy_bmp_grad


def test_head_initialisation_per_dataset():
    torch.manual_seed(0)
    thumos = AFSD(SMALL_THUMOS).coarse_pyramid_detection
    limit = (6 / (512 * 3 + 512 * 3)) ** 0.5  # Glorot uniform bound of a 512→512 k3 conv
    weight = thumos.loc_tower[0][0].conv1d.weight
    assert weight.abs().max() <= limit and weight.abs().max() > 0.9 * limit
    assert torch.all(thumos.loc_tower[0][0].conv1d.bias == 0)
    assert torch.all(thumos.loc_tower[0][1].weight == 1)
    assert thumos.loc_heads[0].scale.item() == 1.0

    anet = AFSD(SMALL_ANET).coarse_pyramid_detection
    std = anet.conf_proposal_branch.lr_conv[0].conv1d.weight.std().item()
    assert 0.009 < std < 0.011
    pyramid_weight = anet.pyramids[1][0].conv1d.weight  # keeps Glorot
    assert pyramid_weight.std().item() > 0.02


def _config(dataset="thumos14", num_classes=5, clip_length=64, crop_size=32, in_channels=3, backbone_model=None, **model):
    from afsd_cli.config import build_config

    return build_config({
        "dataset": {"name": dataset, "num_classes": num_classes,
                    "training": {"clip_length": clip_length, "crop_size": crop_size}},
        "model": {"in_channels": in_channels, "backbone_model": backbone_model, **model},
    })


def test_build_model_reads_the_config():
    with torch.device("meta"):
        model = build_model(_config(in_channels=2, legacy_bmp_grad=True))
        anet = build_model(_config(dataset="anet", num_classes=201))
    assert model.spec == ModelSpec("thumos14", 5, 64, 32, 2)
    assert model.legacy_bmp_grad
    assert model.backbone._model.Conv3d_1a_7x7.conv3d.weight.shape[1] == 2
    assert anet.coarse_pyramid_detection.conf_head.conv1d.out_channels == 2
    assert not anet.legacy_bmp_grad


def test_build_model_backbone_loading_needs_a_path(tmp_path):
    from afsd_cli.errors import CheckpointError

    with torch.device("meta"):
        with pytest.raises(ConfigError, match="backbone_model"):
            build_model(_config(), load_backbone=True)
        with pytest.raises(CheckpointError, match="not found") as info:
            build_model(_config(backbone_model=str(tmp_path / "rgb_imagenet.pt")), load_backbone=True)
    assert "rgb_imagenet.pt" in str(info.value)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("thumos14.yaml", ModelSpec("thumos14", 21, 256, 96, 3)),
        ("thumos14_flow.yaml", ModelSpec("thumos14", 21, 256, 96, 2)),
        ("anet.yaml", ModelSpec("anet", 201, 768, 96, 3)),
        ("anet_flow.yaml", ModelSpec("anet", 201, 768, 96, 2)),
    ],
)
def test_build_model_from_the_official_configs(config, expected):
    from pathlib import Path

    from afsd_cli.config import load_config

    cfg = load_config(Path(__file__).parents[1] / "configs" / config)
    with torch.device("meta"):
        model = build_model(cfg)
    assert model.spec == expected
    assert model.coarse_pyramid_detection.conf_head.conv1d.out_channels == (21 if expected.dataset == "thumos14" else 2)
