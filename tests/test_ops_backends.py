"""ops/: one backend chooser for the three $AFSD_*_BACKEND variables, kernels found from ops/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from afsd_cli.errors import ConfigError
from afsd_cli.ops.backends import choose_backend

REPO = Path(__file__).resolve().parents[1]
ALLOWED = ("auto", "native", "numpy")


def test_unset_or_blank_means_the_default(monkeypatch):
    monkeypatch.delenv("AFSD_TEST_BACKEND", raising=False)
    assert choose_backend("AFSD_TEST_BACKEND", ALLOWED) == "auto"
    assert choose_backend("AFSD_TEST_BACKEND", ALLOWED, default="numpy") == "numpy"
    monkeypatch.setenv("AFSD_TEST_BACKEND", "  ")
    assert choose_backend("AFSD_TEST_BACKEND", ALLOWED) == "auto"


def test_case_and_blanks_do_not_matter(monkeypatch):
    monkeypatch.setenv("AFSD_TEST_BACKEND", " NumPy\n")
    assert choose_backend("AFSD_TEST_BACKEND", ALLOWED) == "numpy"


def test_unknown_value_is_a_config_error_naming_variable_and_choices(monkeypatch):
    monkeypatch.setenv("AFSD_TEST_BACKEND", "fastest")
    with pytest.raises(ConfigError) as caught:
        choose_backend("AFSD_TEST_BACKEND", ALLOWED)
    assert str(caught.value) == "$AFSD_TEST_BACKEND='fastest' is not one of auto, native, numpy"


@pytest.mark.parametrize("variable,check", [
    ("AFSD_SOFTNMS_BACKEND", "afsd_cli.ops.soft_nms:soft_nms_backend"),
    ("AFSD_RESIZE_BACKEND", "afsd_cli.ops.bicubic_resize:active_backend"),
    ("AFSD_BMP_BACKEND", "afsd_cli.ops.boundary_pooling:_requested_backend"),
])
def test_every_kernel_reads_its_variable_through_the_chooser(monkeypatch, variable, check):
    import importlib

    module_name, function_name = check.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    monkeypatch.setenv(variable, "warp-drive")
    with pytest.raises(ConfigError, match=f"\\${variable}='warp-drive' is not one of auto"):
        function()


def test_kernels_live_only_under_ops():
    import afsd_cli
    from afsd_cli.engine import postprocess

    package = Path(afsd_cli.__file__).parent
    # the old aliases of ops/native.py and ops/bicubic_resize.py are gone (a file check: an editable
    # install of another checkout could still resolve the old import paths)
    assert not (package / "native.py").exists() and not (package / "data" / "resample.py").exists()
    assert not hasattr(postprocess, "soft_nms_torch")  # soft-NMS is imported from ops/ only


def test_kernel_sources_are_found_from_ops():
    from afsd_cli.ops import native

    for relative in ("soft_nms/soft_nms.c", "pil_bicubic/pil_bicubic.c"):
        assert native.find_source(relative) == REPO / "csrc" / relative


def test_resize_side_of_ops_does_not_import_torch():
    # prepare and its joblib workers resize frames; they must not pay for importing torch.
    code = ("import sys\n"
            "import afsd_cli.ops, afsd_cli.ops.native, afsd_cli.ops.backends, afsd_cli.ops.bicubic_resize\n"
            "import afsd_cli.data.video\n"
            "assert 'torch' not in sys.modules\n"
            "print(afsd_cli.ops.bicubic_resize.requested_backend())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "AFSD_RESIZE_BACKEND": "pillow"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pillow"


def test_ops_package_still_exports_boundary_max_pool_lazily():
    import afsd_cli.ops as ops

    assert callable(ops.boundary_max_pool) and callable(ops.self_test)
    with pytest.raises(AttributeError):
        ops.no_such_operator  # noqa: B018
