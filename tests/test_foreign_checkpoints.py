"""Checkpoints written by other tools and older PyTorch versions load as in the official ``test.py``.

The official code loads with ``net.load_state_dict(torch.load(path))``: whatever PyTorch accepts
there (1-element ``num_batches_tracked``, BatchNorm states without the counter, the legacy non-zip
format) must load here; what it refuses is still refused, naming the file, keys and shapes.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from afsd_cli.errors import CheckpointError
from afsd_cli.model import AFSD, ModelSpec, load_checkpoint, read_state_dict

VARIANTS = [("thumos14", 3), ("thumos14", 2), ("anet", 3), ("anet", 2)]
COUNTER = "num_batches_tracked"


def small_model(dataset: str = "thumos14", channels: int = 3) -> AFSD:
    return AFSD(ModelSpec(dataset=dataset, num_classes=5, clip_length=64, crop_size=32, in_channels=channels))


def seeded_state(model: torch.nn.Module, seed: int = 3) -> OrderedDict:
    """The model's own state dict (with its ``_metadata``), every tensor told apart from a fresh
    model's: conv weights are random already; norm/bias vectors and counters get offsets."""
    state = model.state_dict()
    for index, (key, value) in enumerate(state.items()):
        if key.endswith(COUNTER):
            state[key] = torch.tensor(7 + seed)
        elif value.dim() <= 1:
            state[key] = value + 0.01 * (index % 89) + seed
    return state


def save_legacy(state, path):
    """``torch.save`` in the pre-1.6 pickle format (what PyTorch 0.3/0.4 wrote)."""
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert not path.read_bytes().startswith(b"PK")  # really not the zip format
    return path


def one_element_counters(state: OrderedDict) -> OrderedDict:
    """Counters as 1-element 1-D tensors, as some tools and older PyTorch versions write them."""
    foreign = OrderedDict((key, value.reshape(1) if key.endswith(COUNTER) else value) for key, value in state.items())
    foreign._metadata = state._metadata
    return foreign


def assert_loaded(model: torch.nn.Module, state) -> None:
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value.reshape(loaded[key].shape)), key


@pytest.mark.parametrize(("dataset", "channels"), VARIANTS)
def test_legacy_file_with_one_element_counters_loads_into_every_variant(tmp_path, dataset, channels):
    source = small_model(dataset, channels)
    state = one_element_counters(seeded_state(source))
    path = save_legacy(state, tmp_path / "foreign.ckpt")
    model = load_checkpoint(small_model(dataset, channels), path)
    assert_loaded(model, state)
    counter = model.backbone._model.Mixed_5c.b0.bn.num_batches_tracked
    assert counter.shape == () and int(counter) == 10


def test_counters_absent_without_module_versions_load_like_pytorch_0_3(tmp_path):
    state = seeded_state(small_model())
    old = {key: value for key, value in state.items() if not key.endswith(COUNTER)}  # no _metadata
    model = load_checkpoint(small_model(), save_legacy(old, tmp_path / "old.ckpt"))
    assert_loaded(model, old)
    assert int(model.backbone._model.Conv3d_1a_7x7.bn.num_batches_tracked) == 0


def test_wrapped_and_prefixed_legacy_file_loads(tmp_path):
    state = one_element_counters(seeded_state(small_model(), seed=4))
    wrapped = OrderedDict((f"module.{key}", value) for key, value in state.items())
    wrapped._metadata = OrderedDict((f"module.{name}" if name else "module", version)
                                    for name, version in state._metadata.items())
    path = save_legacy({"state_dict": wrapped, "epoch": 3}, tmp_path / "ddp.ckpt")
    read = read_state_dict(path)
    assert list(read) == list(state) and "backbone._model.Mixed_3b.b0.bn" in read._metadata
    assert_loaded(load_checkpoint(small_model(), path), state)


def test_a_real_mismatch_is_still_refused_with_file_keys_and_shapes(tmp_path):
    state = seeded_state(small_model(channels=2))
    state["backbone._model.Mixed_4b.b0.bn.num_batches_tracked"] = torch.tensor([1, 2])  # 2 elements: not a counter
    del state["coarse_pyramid_detection.center_head.conv1d.bias"]
    state["extra.weight"] = torch.zeros(2)
    path = save_legacy(state, tmp_path / "flow.ckpt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(small_model(channels=3), path)
    message = str(info.value)
    assert message.startswith(f"{path}: checkpoint does not match the model architecture")
    assert "backbone._model.Conv3d_1a_7x7.conv3d.weight: (64, 2, 7, 7, 7) in file vs (64, 3, 7, 7, 7) in model" in message
    assert "backbone._model.Mixed_4b.b0.bn.num_batches_tracked: (2) in file vs () in model" in message
    assert "1 missing keys: coarse_pyramid_detection.center_head.conv1d.bias" in message
    assert "1 unexpected keys: extra.weight" in message
    assert "\n" not in message


def test_non_finite_weights_are_refused_naming_the_first_bad_tensor(tmp_path):
    state = seeded_state(small_model())
    state["coarse_pyramid_detection.loc_head.conv1d.weight"][0, 0, 0] = float("nan")
    state["backbone._model.Mixed_5c.b0.bn.running_var"][3] = float("inf")
    path = tmp_path / "diverged.ckpt"
    torch.save(state, path)
    model = small_model()
    before = model.backbone._model.Conv3d_1a_7x7.conv3d.weight.clone()
    with pytest.raises(CheckpointError, match=r"non-finite weights .* in coarse_pyramid_detection\.loc_head\.conv1d\.weight"
                                              r" \(and 1 more tensors\)") as info:
        load_checkpoint(model, path)
    assert str(path) in str(info.value)
    assert torch.equal(model.backbone._model.Conv3d_1a_7x7.conv3d.weight, before)  # nothing was copied


# pytorch-i3d (piergiaj): Unit3D modules hold `conv3d` and `bn`, endpoints are attributes of
# InceptionI3d, the classifier is `logits.conv3d.{weight,bias}`; rgb/flow_imagenet.pt were saved by
# PyTorch 0.3/0.4 as a bare OrderedDict.
def pytorch_i3d_state(channels: int, counters: str) -> OrderedDict:
    backbone = small_model(channels=channels).backbone._model
    generator = torch.Generator().manual_seed(channels)
    state = OrderedDict()
    for key, value in backbone.state_dict().items():
        if key.endswith(COUNTER):
            if counters == "none":
                continue
            value = torch.tensor([5]) if counters == "one-element" else torch.tensor(5)
        elif value.is_floating_point():
            value = torch.rand(value.shape, generator=generator) + 0.5
        state[key] = value
    state["logits.conv3d.weight"] = torch.zeros(400, 1024, 1, 1, 1)
    state["logits.conv3d.bias"] = torch.zeros(400)
    return state


@pytest.mark.parametrize("channels", [3, 2])
@pytest.mark.parametrize("counters", ["none", "one-element", "scalar"])
def test_pytorch_i3d_release_layout_loads_into_the_backbone(tmp_path, channels, counters):
    state = pytorch_i3d_state(channels, counters)
    path = save_legacy(state, tmp_path / f"{'rgb' if channels == 3 else 'flow'}_imagenet.pt")
    model = small_model(channels=channels)
    report = model.backbone.load_pretrained(path)
    assert report.unexpected == ["logits.conv3d.weight", "logits.conv3d.bias"] and not report.missing
    assert report.matched == len(state) - 2
    backbone = model.backbone._model
    assert torch.equal(backbone.Mixed_4f.b2b.conv3d.weight, state["Mixed_4f.b2b.conv3d.weight"])
    assert torch.equal(backbone.Conv3d_1a_7x7.bn.running_var, state["Conv3d_1a_7x7.bn.running_var"])
    assert int(backbone.Mixed_5c.b3b.bn.num_batches_tracked) == (0 if counters == "none" else 5)


def test_i3d_file_of_the_other_modality_or_with_nan_is_refused(tmp_path):
    path = save_legacy(pytorch_i3d_state(2, "none"), tmp_path / "flow_imagenet.pt")
    with pytest.raises(CheckpointError) as info:
        small_model(channels=3).backbone.load_pretrained(path)
    assert str(path) in str(info.value)
    assert "Conv3d_1a_7x7.conv3d.weight: (64, 2, 7, 7, 7) in file vs (64, 3, 7, 7, 7) in model" in str(info.value)
    state = pytorch_i3d_state(3, "none")
    state["Mixed_3c.b1b.conv3d.weight"][0] = float("nan")
    path = save_legacy(state, tmp_path / "rgb_imagenet.pt")
    with pytest.raises(CheckpointError, match=r"non-finite weights .* in Mixed_3c\.b1b\.conv3d\.weight"):
        small_model().backbone.load_pretrained(path)
