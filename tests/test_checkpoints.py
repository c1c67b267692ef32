"""Checkpoints in the official layout load strictly; wrong ones fail with a message that helps."""

from __future__ import annotations

import pytest
import torch
from helpers.model_fixtures import key_layout

from afsd_cli.errors import CheckpointError
from afsd_cli.model import AFSD, anet_spec, load_checkpoint, read_state_dict, save_checkpoint, thumos14_spec

SMALL = thumos14_spec(clip_length=64, crop_size=32, num_classes=5)


def _official_layout_state(variant: str) -> dict[str, torch.Tensor]:
    """A state dict with the official keys/shapes/dtypes; values tell tensors apart."""
    state = {}
    for index, (key, shape, dtype) in enumerate(key_layout(variant)):
        state[key] = torch.full(shape, index % 97, dtype=getattr(torch, dtype))
    return state


def _spec(variant: str):
    dataset, modality = variant.split("_")
    channels = 3 if modality == "rgb" else 2
    return thumos14_spec(in_channels=channels) if dataset == "thumos14" else anet_spec(in_channels=channels)


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for variant in ("thumos14_rgb", "thumos14_flow", "anet_rgb", "anet_flow"):
        paths[variant] = folder / f"{variant}.ckpt"
        torch.save(_official_layout_state(variant), paths[variant])
    return paths


@pytest.mark.parametrize("variant", ["thumos14_rgb", "thumos14_flow", "anet_rgb", "anet_flow"])
def test_official_layout_loads_strictly(official_files, variant):
    model = AFSD(_spec(variant))
    load_checkpoint(model, official_files[variant])
    state = model.state_dict()
    reference = _official_layout_state(variant)
    assert torch.equal(state["coarse_pyramid_detection.center_head.conv1d.bias"], reference["coarse_pyramid_detection.center_head.conv1d.bias"])
    assert torch.equal(state["backbone._model.Mixed_5c.b3b.bn.running_var"], reference["backbone._model.Mixed_5c.b3b.bn.running_var"])


@pytest.mark.parametrize(
    ("variant", "model_variant", "fragment"),
    [
        ("thumos14_flow", "thumos14_rgb", "Conv3d_1a_7x7.conv3d.weight: (64, 2, 7, 7, 7) in file vs (64, 3, 7, 7, 7)"),
        ("anet_rgb", "thumos14_rgb", "pyramids.0.0.conv3d.weight"),
        ("thumos14_rgb", "anet_rgb", "missing keys: coarse_pyramid_detection.pyramids.1.0.conv1d.weight"),
    ],
)
def test_other_architecture_is_rejected_with_key_names(official_files, variant, model_variant, fragment):
    model = AFSD(_spec(model_variant))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, official_files[variant])
    message = str(info.value)
    assert str(official_files[variant]) in message
    assert fragment in message


def test_wrapped_and_prefixed_state_dicts_are_unwrapped(tmp_path):
    bare = {"a.weight": torch.arange(3.0), "b.bias": torch.ones(2)}
    for name, obj in {
        "bare.pt": bare,
        "wrapped.pt": {"model": bare, "epoch": 3},
        "lightning.pt": {"state_dict": bare, "optimizer": {}},
        "ddp.pt": {f"module.{key}": value for key, value in bare.items()},
        "compiled.pt": {f"_orig_mod.{key}": value for key, value in bare.items()},
    }.items():
        torch.save(obj, tmp_path / name)
        state = read_state_dict(tmp_path / name)
        assert list(state) == list(bare), name
        assert all(torch.equal(state[key], value) for key, value in bare.items())


def test_save_then_load_round_trip_is_the_bare_official_layout(tmp_path):
    torch.manual_seed(1)
    model = AFSD(SMALL)
    path = save_checkpoint(model, tmp_path / "out" / "checkpoint-1.ckpt")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert list(raw) == list(model.state_dict())
    assert not any(key.startswith("module.") for key in raw)
    fresh = AFSD(SMALL)
    load_checkpoint(fresh, path)
    assert torch.equal(fresh.coarse_pyramid_detection.loc_head.conv1d.weight, model.coarse_pyramid_detection.loc_head.conv1d.weight)
    assert not list((tmp_path / "out").glob("*.tmp*"))


def test_non_strict_load_tolerates_missing_but_not_wrong_shapes(tmp_path):
    model = AFSD(SMALL)
    state = model.state_dict()
    partial = {key: value for key, value in state.items() if key.startswith("backbone.")}
    torch.save(partial, tmp_path / "backbone_only.pt")
    load_checkpoint(AFSD(SMALL), tmp_path / "backbone_only.pt", strict=False)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint(AFSD(SMALL), tmp_path / "backbone_only.pt")
    partial["backbone._model.Conv3d_2b_1x1.conv3d.weight"] = torch.zeros(64, 64, 1, 1, 2)
    torch.save(partial, tmp_path / "bad_shape.pt")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(AFSD(SMALL), tmp_path / "bad_shape.pt", strict=False)


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as info:
        read_state_dict(tmp_path / "nope.ckpt")
    assert "nope.ckpt" in str(info.value)
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_state_dict(tmp_path / "garbage.ckpt")
    torch.save([1, 2, 3], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(tmp_path / "list.ckpt")


class Payload:
    """An arbitrary class: unpickling it would mean running code, which weights_only forbids."""


def test_checkpoint_with_code_is_refused(tmp_path):
    torch.save({"weights": Payload()}, tmp_path / "pickled.ckpt")
    with pytest.raises(CheckpointError, match="refused: the file holds Python objects") as info:
        read_state_dict(tmp_path / "pickled.ckpt")
    assert "weights_only" not in str(info.value)


def _pytorch_i3d_file(path, in_channels=3, with_logits=True, drop_counters=True):
    """A file in the pytorch-i3d layout (rgb_imagenet.pt): endpoint keys, logits, no counters."""
    backbone = AFSD(thumos14_spec(in_channels=in_channels, clip_length=64, crop_size=32)).backbone._model
    generator = torch.Generator().manual_seed(in_channels)
    state = {}
    for key, value in backbone.state_dict().items():
        if drop_counters and key.endswith("num_batches_tracked"):
            continue
        state[key] = torch.rand(value.shape, generator=generator) if value.is_floating_point() else value
    if with_logits:
        state["logits.conv3d.weight"] = torch.zeros(400, 1024, 1, 1, 1)
        state["logits.conv3d.bias"] = torch.zeros(400)
    torch.save(state, path)
    return state


def test_i3d_weights_load_with_a_report(tmp_path):
    path = tmp_path / "rgb_imagenet.pt"
    state = _pytorch_i3d_file(path)
    model = AFSD(SMALL)
    report = model.backbone.load_pretrained(path)
    assert report.matched == len(state) - 2
    assert report.unexpected == ["logits.conv3d.weight", "logits.conv3d.bias"]
    assert not report.missing  # PyTorch fills the BatchNorm counters a PyTorch 0.3 file lacks
    assert torch.equal(model.backbone._model.Mixed_4f.b1b.conv3d.weight, state["Mixed_4f.b1b.conv3d.weight"])
    assert "tensors loaded" in report.summary()


def test_i3d_weights_can_come_from_a_whole_afsd_checkpoint(tmp_path):
    torch.manual_seed(2)
    trained = AFSD(SMALL)
    save_checkpoint(trained, tmp_path / "checkpoint-3.ckpt")
    model = AFSD(SMALL)
    report = model.backbone.load_pretrained(tmp_path / "checkpoint-3.ckpt")
    assert report.matched == len(trained.backbone._model.state_dict()) and not report.missing
    assert report.unexpected and all(key.startswith("coarse_pyramid_detection.") for key in report.unexpected)
    assert torch.equal(model.backbone._model.Mixed_3b.b2b.conv3d.weight, trained.backbone._model.Mixed_3b.b2b.conv3d.weight)


def test_i3d_weights_of_other_modality_or_layout_are_rejected(tmp_path):
    _pytorch_i3d_file(tmp_path / "flow_imagenet.pt", in_channels=2)
    with pytest.raises(CheckpointError, match="Conv3d_1a_7x7.conv3d.weight"):
        AFSD(SMALL).backbone.load_pretrained(tmp_path / "flow_imagenet.pt")
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "resnet.pt")
    with pytest.raises(CheckpointError, match="no tensor matches"):
        AFSD(SMALL).backbone.load_pretrained(tmp_path / "resnet.pt")


def test_build_model_loads_backbone_when_asked(tmp_path):
    from afsd_cli.config import build_config
    from afsd_cli.model import build_model

    path = tmp_path / "rgb_imagenet.pt"
    state = _pytorch_i3d_file(path)
    cfg = build_config({"dataset": {"name": "thumos14", "num_classes": 5,
                                    "training": {"clip_length": 64, "crop_size": 32}},
                        "model": {"backbone_model": str(path)}})
    model = build_model(cfg, load_backbone=True)
    assert model.backbone_report.matched == len(state) - 2
    assert torch.equal(model.backbone._model.Conv3d_1a_7x7.conv3d.weight, state["Conv3d_1a_7x7.conv3d.weight"])
    untouched = build_model(cfg)
    assert untouched.backbone_report is None
    assert not torch.equal(untouched.backbone._model.Conv3d_1a_7x7.conv3d.weight, state["Conv3d_1a_7x7.conv3d.weight"])
