"""Every numeric config key has a checked range; hostile YAML (alias bombs, deep nesting, huge
numbers) is refused early with one short line; error messages stay bounded."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from afsd_cli.cli import app
from afsd_cli.config import DATASET_DEFAULTS, MAX_CONFIG_BYTES, SCHEMA, _all_keys, _field, build_config, load_config
from afsd_cli.errors import MAX_MESSAGE_CHARS, ConfigError, InputError, short_repr
from afsd_cli.evaluation import parse_tiou

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
THUMOS = CONFIGS / "thumos14.yaml"

# (override, key named in the message, what the message says about the valid values)
DEGENERATE = [
    ("dataset.training.clip_stride=0", "dataset.training.clip_stride", ">= 1"),
    ("testing.top_k=-5", "testing.top_k", "in [1, "),
    ("training.batch_size=0", "training.batch_size", ">= 1"),
    ("testing.batch_size=0", "testing.batch_size", ">= 1"),
    ("testing.nms_sigma=null", "testing.nms_sigma", "must be set"),
    ("testing.nms_sigma=0", "testing.nms_sigma", ">= 1e-06"),
    ("training.learning_rate=nan", "training.learning_rate", "> 0"),
    ("training.learning_rate=.inf", "training.learning_rate", "> 0"),
    ("training.learning_rate=0", "training.learning_rate", "> 0"),
    ("training.weight_decay=-1e-3", "training.weight_decay", ">= 0"),
    ("training.weight_decay=1" + "0" * 400, "training.weight_decay", "got inf"),  # no OverflowError
    ("testing.conf_thresh=1", "testing.conf_thresh", "in [0, 1)"),
    ("dataset.testing.clip_length=100", "dataset.testing.clip_length", "multiple of 8"),
    ("dataset.training.crop_size=0", "dataset.training.crop_size", ">= 1"),
    ("dataset.num_classes=1", "dataset.num_classes", ">= 2"),
    ("training.max_epoch=0", "training.max_epoch", ">= 1"),
    ("training.piou=1.5", "training.piou", "in [0, 1]"),
    ("training.random_seed=-1", "training.random_seed", "in [0, "),
    ("training.checkpoint_every=0", "training.checkpoint_every", ">= 1"),
    ("training.num_workers=-2", "training.num_workers", ">= 0"),
    ("model.freeze_bn=null", "model.freeze_bn", "must be set"),
    ("testing.output_json=null", "testing.output_json", "must be set"),
]


def numeric_keys():
    return [key for key in _all_keys(SCHEMA) if _field(key).kind in ("int", "float")]


def nested(key: str, value):
    tree = value
    for part in reversed(key.split(".")):
        tree = {part: tree}
    return tree


def assert_one_short_line(message: str, *fragments: str) -> None:
    assert "\n" not in message.strip()
    assert len(message) <= MAX_MESSAGE_CHARS + 300
    for fragment in fragments:
        assert fragment in message


def test_every_numeric_key_has_a_range_holding_its_defaults():
    keys = numeric_keys()
    assert len(keys) > 25  # the walk really visits the schema
    for key in keys:
        field = _field(key)
        assert field.valid is not None, f"{key} has no valid range"
        if field.default is not None:
            assert field.default in field.valid, key
    for defaults in DATASET_DEFAULTS.values():
        for key, value in defaults.items():
            assert value in _field(key).valid, key


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_official_and_demo_configs_still_load(path):
    cfg = load_config(path)
    assert cfg.testing.nms_sigma > 0 and cfg.training.batch_size >= 1


@pytest.mark.parametrize("override, key, valid", DEGENERATE, ids=[d[0] for d in DEGENERATE])
def test_degenerate_override_is_refused_naming_key_and_range(override, key, valid):
    with pytest.raises(ConfigError) as info:
        load_config(THUMOS, [override])
    assert_one_short_line(str(info.value), repr(key), valid)


@pytest.mark.parametrize("override, key, valid", DEGENERATE, ids=[d[0] for d in DEGENERATE])
def test_degenerate_value_in_the_file_is_refused(tmp_path, override, key, valid):
    raw = override.split("=", 1)[1]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(nested(key, yaml.safe_load(raw))))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    assert_one_short_line(str(info.value), repr(key), valid)


def test_optional_numeric_key_still_accepts_null():
    cfg = load_config(THUMOS, ["training.lw=null", "training.piou=~"])
    assert (cfg.training.lw, cfg.training.piou) == (10.0, 0.5)  # the dataset defaults


def test_bounds_that_official_values_sit_on_are_allowed():
    cfg = load_config(THUMOS, ["training.grad_clip=0", "training.validate_every=0", "training.resume=0",
                               "testing.conf_thresh=0", "training.piou=1", "training.ssl=0",
                               "dataset.training.clip_length=8", "dataset.testing.clip_length=8"])
    assert cfg.dataset.training.clip_length == 8 and cfg.testing.conf_thresh == 0.0


@pytest.mark.parametrize("override", ["dataset.testing.clip_length=128", "dataset.testing.crop_size=64"])
def test_testing_window_must_fit_the_network_built_for_training(override):
    with pytest.raises(ConfigError) as info:
        load_config(THUMOS, [override])
    size = override.split("=")[0].rsplit(".", 1)[1]
    assert_one_short_line(str(info.value), f"dataset.testing.{size}", f"dataset.training.{size}")
    # both changed together is fine; left unset, the testing sizes are the training ones
    load_config(THUMOS, [override, override.replace("testing", "training")])
    cfg = build_config({"dataset": {"training": {"clip_length": 32, "crop_size": 16}}})
    assert (cfg.dataset.testing.clip_length, cfg.dataset.testing.crop_size) == (32, 16)
    cfg = load_config(THUMOS, ["dataset.training.crop_size=64", "dataset.testing.crop_size=null"])
    assert cfg.dataset.testing.crop_size == 64


def test_tiou_range_with_absurd_count_is_refused():
    with pytest.raises(InputError, match="start:stop:num"):
        parse_tiou("0.1:0.9:100000000000")


@pytest.mark.parametrize("command, override, key", [
    (["train", str(THUMOS)], "training.batch_size=0", "training.batch_size"),
    (["predict", str(THUMOS), "--checkpoint", "missing.ckpt", "-o", "out.json"], "testing.top_k=-5", "testing.top_k"),
    (["fuse", str(THUMOS), "-o", "out.json"], "testing.nms_sigma=null", "testing.nms_sigma"),
])
def test_cli_override_refused_in_one_line(tmp_path, monkeypatch, command, override, key):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*command, override])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0], result.output
    assert not list(tmp_path.iterdir())  # refused before any output


@pytest.mark.parametrize("arguments, option", [
    (["prepare", "videos", "out", "--jobs", "-1"], "--jobs"),
    (["prepare", "--synthetic", "out", "--videos", "1"], "--videos"),
    (["prepare", "videos", "out", "--size", "0"], "--size"),
    (["flow", "rgb", "flow", "--jpeg-quality", "101"], "--jpeg-quality"),
    (["flow", "rgb", "flow", "--jobs", "-1"], "--jobs"),
    (["train", str(THUMOS), "--jobs", "-1"], "--jobs"),
    (["train", str(THUMOS), "--max-steps", "0"], "--max-steps"),
    (["predict", str(THUMOS), "--batch-size", "0"], "--batch-size"),
    (["checks", "--seed", "-1"], "--seed"),
])
def test_cli_numeric_options_have_ranges(tmp_path, monkeypatch, arguments, option):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, arguments, env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert "than" in result.output or "range" in result.output  # "greater than or equal to ..."
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- hostile YAML

LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
BOMBS = {
    # 9**9 strings by reference, under unknown keys (refused before any key is looked at)
    "unknown keys": 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + LAUGHS,
    # the same inside the value of a real key: the type error would repr all of it
    "value of a key": "training:\n  lw:\n    - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                      + "".join(f"    - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)),
    # `<<` merge keys copy mappings while loading: doubling at each level
    "merge keys": "m0: &m0 {k: 1}\n" + "".join(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}\n" for i in range(1, 40)),
}


# the same in one override: flow-style anchors and aliases on the command line
OVERRIDE_BOMB = "training.lw=[&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol], " + ", ".join(
    f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)) + "]"


def refused_under_memory_bound(path: Path, overrides=()) -> str:
    """load_config in a child limited to 400 MB of address space (the bombs need gigabytes);
    returns the ConfigError's text."""
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))
        from afsd_cli.config import load_config
        from afsd_cli.errors import ConfigError
        try:
            load_config({str(path)!r}, {list(overrides)!r})
        except ConfigError as exc:
            print(exc)
            sys.exit(3)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_alias_bomb_is_refused_under_a_memory_bound(tmp_path, name):
    text = BOMBS[name]
    assert len(text) < 1500  # a few hundred bytes
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert_one_short_line(refused_under_memory_bound(path), str(path), "alias")


def test_alias_bomb_in_an_override_is_refused_under_a_memory_bound():
    assert len(OVERRIDE_BOMB) < 600  # a few hundred bytes
    assert_one_short_line(refused_under_memory_bound(THUMOS, [OVERRIDE_BOMB]), "override training.lw", "alias")


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("training: &a [*a]\n")
    with pytest.raises(ConfigError, match="refer to themselves"):
        load_config(path)


def test_anchors_within_budget_still_work(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("dataset:\n  training: &split {clip_length: 64, crop_size: 32}\n  testing: *split\n")
    cfg = load_config(path)
    assert cfg.dataset.testing.clip_length == 64 and cfg.dataset.testing.crop_size == 32


@pytest.mark.parametrize("text, fragment", [
    ("training: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than"),
    ("testing:\n  top_k: " + "9" * 6000 + "\n", "malformed YAML"),
    ("training:\n  ? " + "k" * 50_000 + "\n  : 1\n", "unknown key"),  # an explicit (unbounded) key
])
def test_hostile_scalars_and_nesting_refused_in_one_short_line(tmp_path, text, fragment):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_one_short_line(str(info.value), fragment)


def test_oversized_config_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match="bytes"):
        load_config(path)


def test_short_repr_never_expands_shared_structures():
    laughs = ["lol"] * 9
    for _ in range(30):  # 9**30 items by reference
        laughs = [laughs] * 9
    text = short_repr(laughs, 60)
    assert len(text) <= 60 and text.startswith("[[[")
    assert short_repr(10**10000, 60) == "<integer of about 10001 digits>"
    assert short_repr("x" * 10**6, 20) == "'xxxxxxxxxxxxxxxxxx…"
    assert short_repr({"a": 1}, 60) == "{'a': 1}"


def test_error_messages_are_capped():
    error = ConfigError("y" * 100_000, "x.yaml")
    assert str(error).startswith("x.yaml: yyy") and str(error).endswith("…")
    assert len(str(error)) <= MAX_MESSAGE_CHARS + len("x.yaml: ")
    assert len(error.message) == 100_000  # the full text stays available to code
