"""`afsd checks`: the report renders, and a backend that disagrees makes the command fail."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from afsd_cli.cli import app  # noqa: E402
from afsd_cli.ops import boundary_pooling as bmp  # noqa: E402

runner = CliRunner()


def test_checks_reports_versions_backends_and_passes():
    result = runner.invoke(app, ["checks", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    for expected in ("torch", torch.__version__, "numpy", "opencv", "cuDNN", "reference", "cpp", "pass",
                     "All loaded backends agree", "frame resize", "installed Pillow", "soft-NMS"):
        assert expected in result.output
    assert "FAIL" not in result.output


def test_checks_fails_when_a_backend_disagrees(monkeypatch):
    original = bmp._ReferenceBackend.forward

    def off_by_a_quarter(x, segments, with_argmax):
        output, argmax = original(x, segments, with_argmax)
        return output + 0.25, argmax

    monkeypatch.setattr(bmp._ReferenceBackend, "forward", staticmethod(off_by_a_quarter))
    result = runner.invoke(app, ["checks", "--repeats", "1"])
    assert result.exit_code == 1
    assert "FAIL" in result.output
    assert "disagree" in result.output and "reference (cpu)" in result.output
