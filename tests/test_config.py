"""Config loading: official YAML unchanged, validation, overrides, path resolution."""

from pathlib import Path

import pytest

from afsd_cli.config import build_config, load_config, parse_override
from afsd_cli.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name, dataset, channels, lw, piou", [
    ("thumos14", "thumos14", 3, 10.0, 0.5),
    ("thumos14_flow", "thumos14", 2, 10.0, 0.5),
    ("anet", "anet", 3, 1.0, 0.6),
    ("anet_flow", "anet", 2, 1.0, 0.6),
])
def test_official_configs_load(name, dataset, channels, lw, piou):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.dataset.name == dataset
    assert cfg.model.in_channels == channels
    assert cfg.training.lw == lw and cfg.training.piou == piou
    # YAML 1.1 reads `1e-5` as a string: it must come out as a float.
    assert isinstance(cfg.training.learning_rate, float)
    assert cfg.training.weight_decay > 0


def test_official_values_and_none_strings():
    cfg = load_config(CONFIGS / "anet.yaml")
    assert cfg.dataset.training.clip_length == 768
    assert cfg.dataset.training.video_anno_path is None  # the file says `None`
    assert cfg.testing.nms_sigma == 0.85
    assert cfg.training.backbone_lr_scale == 0.1
    thumos = load_config(CONFIGS / "thumos14.yaml")
    assert thumos.dataset.testing.clip_stride == 128
    assert thumos.dataset.training.clip_stride == 30
    assert thumos.testing.top_k == 5000


def test_the_testing_stride_defaults_to_half_the_clip():
    # the official THUMOS14 testing windows overlap by half (256 / 128); an unset testing stride
    # follows the clip, so overriding the training clip length alone keeps a valid configuration
    assert build_config({"dataset": {"name": "thumos14"}}).dataset.testing.clip_stride == 128
    cfg = build_config({"dataset": {"name": "custom"}}, ["dataset.training.clip_length=64"])
    assert (cfg.dataset.testing.clip_length, cfg.dataset.testing.clip_stride) == (64, 32)
    set_explicitly = build_config({"dataset": {"name": "thumos14", "testing": {"clip_stride": 100}}})
    assert set_explicitly.dataset.testing.clip_stride == 100


def test_overrides_are_typed(tmp_path):
    cfg = load_config(CONFIGS / "thumos14.yaml", ["training.learning_rate=1e-4", "testing.top_k=10",
                                                   "model.freeze_bn=false", "training.lw=2"])
    assert cfg.training.learning_rate == pytest.approx(1e-4)
    assert cfg.testing.top_k == 10
    assert cfg.model.freeze_bn is False
    assert cfg.training.lw == 2.0
    with pytest.raises(ConfigError, match="testing.top_k.*integer"):
        load_config(CONFIGS / "thumos14.yaml", ["testing.top_k=many"])
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("training.lw")
    with pytest.raises(ConfigError, match="names a section"):
        parse_override("training=1")


def test_unknown_key_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  learning_rat: 1e-4\n")
    with pytest.raises(ConfigError, match=r"did you mean 'training.learning_rate'") as info:
        load_config(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="did you mean 'testing.nms_sigma'"):
        load_config(CONFIGS / "thumos14.yaml", ["testing.nms_sigm=0.3"])
    # a key in the wrong section is found in the right one
    path.write_text("training:\n  conf_thresh: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'testing.conf_thresh'"):
        load_config(path)


def test_wrong_type_names_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset:\n  training:\n    clip_length: long\n")
    with pytest.raises(ConfigError, match="dataset.training.clip_length"):
        load_config(path)
    path.write_text("model:\n  freeze_bn: maybe\n")
    with pytest.raises(ConfigError, match="model.freeze_bn"):
        load_config(path)


def test_malformed_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [1, 2\n")
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_config(bad)
    bad.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_path_resolution(tmp_path, monkeypatch):
    folder = tmp_path / "cfgs"
    folder.mkdir()
    path = folder / "c.yaml"
    path.write_text("dataset:\n  testing:\n    video_data_path: data/npy\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(path).dataset.testing.video_data_path == str((tmp_path / "data/npy").resolve())
    path.write_text("paths_relative_to: config\ndataset:\n  testing:\n    video_data_path: data/npy\n")
    assert load_config(path).dataset.testing.video_data_path == str((folder / "data/npy").resolve())
    # overrides stay relative to the working directory
    cfg = load_config(path, ["dataset.testing.video_data_path=other"])
    assert cfg.dataset.testing.video_data_path == str((tmp_path / "other").resolve())


def test_dataset_inference_and_save(tmp_path):
    cfg = build_config({"dataset": {"training": {"video_info_path": "x/info.json"}}})
    assert cfg.dataset.name == "anet" and cfg.training.lw == 1.0
    cfg = build_config({"dataset": {"name": "thumos14"}, "training": {"lw": 3}})
    assert cfg.training.lw == 3.0
    saved = cfg.save(tmp_path / "resolved.yaml")
    again = load_config(saved)
    assert again.to_dict() == cfg.to_dict()
    with pytest.raises(AttributeError):
        cfg.training.lw = 5


def test_docs_config_reference_is_in_sync():
    from afsd_cli.config import schema_markdown

    text = (CONFIGS.parent / "docs" / "config.md").read_text()
    table = text.split("<!-- schema:begin -->\n", 1)[1].split("<!-- schema:end -->", 1)[0]
    assert table == schema_markdown(), "refresh docs/config.md with `python -m afsd_cli.config`"
