"""The CLI turns library errors into one plain line and a non-zero exit, no traceback."""

import typer
from typer.testing import CliRunner

from afsd_cli.cli import app
from afsd_cli.commands._common import handle_errors
from afsd_cli.errors import InputError


def test_error_message_is_printed_verbatim():
    demo = typer.Typer()

    @demo.command()
    @handle_errors
    def run() -> None:
        raise InputError("bad value [x] :x: here", "/tmp/a[1].json")

    result = CliRunner().invoke(demo, [])
    assert result.exit_code == 1
    assert "/tmp/a[1].json: bad value [x] :x: here" in result.output
    assert "Traceback" not in result.output


def test_help_lists_all_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("prepare", "flow", "train", "predict", "fuse", "evaluate", "checks"):
        assert name in result.output
