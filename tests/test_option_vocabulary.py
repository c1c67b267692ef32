"""The README's option table is true for every command, and the old spellings still work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from afsd_cli.cli import app
from afsd_cli.commands._vocabulary import RENAMED_OPTIONS, rewrite_deprecated

README = Path(__file__).resolve().parents[1] / "README.md"
runner = CliRunner()


def readme_option_table() -> dict[str, set[str]]:
    """command -> the option spellings the README's table marks for it."""
    text = README.read_text(encoding="utf-8")
    table = text.split("<!-- option-table:start -->", 1)[1].split("<!-- option-table:end -->", 1)[0]
    rows = [line for line in table.strip().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in re.split(r"(?<!\\)\|", rows[0])[1:-1]]
    commands = header[2:]
    marked: dict[str, set[str]] = {command: set() for command in commands}
    for row in rows[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]
        assert len(cells) == len(header), row
        spellings = set(re.findall(r"`(-[^`\s]+)", cells[0]))
        assert spellings, row
        for command, cell in zip(commands, cells[2:]):
            assert cell in ("", "✓"), row
            if cell:
                marked[command] |= spellings
    return marked


def command_options() -> dict[str, set[str]]:
    """command -> the option spellings its --help shows (hidden ones and --help excluded)."""
    group = typer.main.get_command(app)
    found = {}
    for name, command in group.commands.items():
        spellings = set()
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                spellings |= set(param.opts) | set(param.secondary_opts)
        found[name] = spellings - {"--help", "-h"}
    return found


def test_readme_table_matches_every_command():
    table, actual = readme_option_table(), command_options()
    assert set(table) == set(actual)
    for command in actual:
        assert table[command] == actual[command], (
            command, "missing from README:", actual[command] - table[command],
            "not an option:", table[command] - actual[command])


@pytest.mark.parametrize("command", ["prepare", "flow", "train", "predict", "fuse", "evaluate", "checks", "extract"])
def test_help_lists_the_table_and_no_old_spelling(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for spelling in readme_option_table()[command]:
        assert re.search(rf"(?<![\w-]){re.escape(spelling)}(?![\w-])", result.output), spelling
    for old in RENAMED_OPTIONS.get(command, {}):
        assert not re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", result.output), old


def test_one_short_flag_per_idea():
    short = {}
    for command, spellings in command_options().items():
        for spelling in spellings:
            if not spelling.startswith("--"):
                short.setdefault(spelling, set()).add(command)
    assert set(short) == {"-o", "-j"}, short


def test_old_spellings_are_rewritten_with_one_notice_each():
    args, notices = rewrite_deprecated(
        "predict", ["cfg.yaml", "-v", "a.mp4", "-v", "b.mp4", "--workers=2", "-b", "4", "--amp", "--amp-dtype", "fp16"])
    assert args == ["cfg.yaml", "--video", "a.mp4", "--video", "b.mp4", "--jobs=2", "--batch-size", "4", "--amp", "fp16"]
    assert len(notices) == 5 and all("next release" in n for n in notices)  # -v once, though used twice
    # the bare flag means bf16; a value is the new form and passes untouched; `--` ends options
    assert rewrite_deprecated("fuse", ["--amp", "--device", "cuda"])[0] == ["--amp", "bf16", "--device", "cuda"]
    assert rewrite_deprecated("predict", ["--amp", "fp16"]) == (["--amp", "fp16"], [])
    assert rewrite_deprecated("predict", ["--", "-v"])[0] == ["--", "-v"]
    # --amp-dtype without the flag had no effect, and still has none
    assert rewrite_deprecated("predict", ["--amp-dtype", "fp16", "x.yaml"])[0] == ["x.yaml"]
    assert rewrite_deprecated("train", ["--workers", "3"])[0] == ["--jobs", "3"]
    assert rewrite_deprecated("extract", ["in", "out", "-w", "i3d.pt", "-b", "4"])[0] == [
        "in", "out", "--weights", "i3d.pt", "--batch-size", "4"]
    assert rewrite_deprecated("evaluate", ["-v"])[0] == ["-v"]  # only the command's own old spellings


def test_old_spelling_works_on_the_command_line(tmp_path):
    result = runner.invoke(app, ["prepare", "--synthetic", str(tmp_path / "syn"), "--videos", "1", "--classes", "1",
                                 "-d", "thumos14", "--help"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", str(tmp_path / "missing.yaml"), "-v", "x.mp4", "--amp"])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    # parsed (no usage error): the failure is the missing config, after the deprecation lines
    assert result.exit_code == 1 and "config file not found" in text, text
    assert "deprecated: -v is now --video" in text and "--amp bf16|fp16" in text


def test_version():
    from afsd_cli import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"afsd {__version__}"
    pyproject = (README.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert f'version = "{__version__}"' in pyproject
