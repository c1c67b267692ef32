"""Pillow-exact bicubic resize: the native C kernel, the NumPy reference and Pillow agree bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from afsd_cli.errors import ConfigError
from afsd_cli.ops import bicubic_resize as resample
from afsd_cli.ops import native

REPO = Path(__file__).resolve().parents[1]


def pillow_resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    channels = frame.shape[2]
    image = Image.fromarray(np.ascontiguousarray(frame[:, :, 0] if channels == 1 else frame))
    return np.asarray(image.resize((width, height), Image.BICUBIC)).reshape(height, width, channels)


def random_frame(rng, height, width, channels=3, kind="noise"):
    frame = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    if kind == "binary":  # 0/255 edges drive the sums far outside 0..255: exercises the clamp
        frame = np.where(frame > 127, 255, 0).astype(np.uint8)
    return frame


@pytest.fixture(scope="module")
def native_backend():
    state = resample.native_state()
    if state.library is None:
        pytest.skip(f"native resize unavailable here: {state.error}")
    return state


# Shapes: THUMOS14/ANet frame sizes to 112, both pass orders, upscales, one axis only, 1 px.
CASES = [
    (240, 320, 112, 112), (180, 320, 112, 112), (360, 480, 112, 112), (1080, 1920, 112, 112),
    (112, 320, 112, 112), (240, 112, 112, 112), (720, 404, 112, 112), (64, 16, 8, 8),
    (9, 7, 30, 20), (1, 1, 5, 3), (5, 3, 1, 1), (2, 200, 2, 13), (300, 2, 17, 2), (50, 50, 50, 50),
]


@pytest.mark.parametrize("height,width,out_h,out_w", CASES)
@pytest.mark.parametrize("reverse", [False, True])
def test_native_equals_pillow(native_backend, height, width, out_h, out_w, reverse):
    rng = np.random.default_rng(height * 7919 + width)
    resizer = resample.BicubicResizer(out_h, out_w, reverse_channels=reverse, backend="native")
    for kind in ("noise", "binary"):
        frame = random_frame(rng, height, width, kind=kind)
        expected = pillow_resize(frame, out_h, out_w)
        if reverse:
            expected = expected[:, :, ::-1]
        np.testing.assert_array_equal(resizer(frame), expected)


@pytest.fixture(params=["simd", "portable"])
def native_path(native_backend, request):
    """Run a test on the SIMD path (where the CPU has it) and on the portable C loops."""
    library = native_backend.library
    in_use = library.afsd_resize_simd(request.param == "simd")
    if request.param == "simd" and not in_use:
        pytest.skip("no SIMD path on this CPU")
    yield request.param
    library.afsd_resize_simd(1)


def test_native_equals_pillow_on_random_shapes(native_path):
    rng = np.random.default_rng(0)
    for trial in range(120):
        height, width, out_h, out_w = (int(v) for v in rng.integers(1, 200, 4))
        channels = 1 if trial % 4 == 0 else 3
        frame = random_frame(rng, height, width, channels, "binary" if trial % 3 == 0 else "noise")
        got = resample.BicubicResizer(out_h, out_w, backend="native")(frame)
        np.testing.assert_array_equal(got, pillow_resize(frame, out_h, out_w), err_msg=str((height, width, out_h, out_w)))


def test_native_reads_strided_and_reversed_views(native_backend):
    rng = np.random.default_rng(1)
    base = random_frame(rng, 120, 170)
    resizer = resample.BicubicResizer(112, 112, backend="native")
    for view in (base[::-1], base[:, ::-1], base[10:100, 20:150], base[:, :, ::-1], base[::2, ::3]):
        np.testing.assert_array_equal(resizer(view), pillow_resize(np.ascontiguousarray(view), 112, 112))


@pytest.mark.parametrize("rule", [False, True])
def test_native_equals_reference_under_both_pass_rules(native_backend, rule):
    """Both pass orders against the NumPy reference, whichever rule the installed Pillow follows."""
    rng = np.random.default_rng(2)
    for height, width, out_h, out_w in ((64, 16, 8, 8), (90, 40, 11, 30), (37, 41, 12, 9), (240, 320, 112, 112)):
        frame = random_frame(rng, height, width)
        got = resample.BicubicResizer(out_h, out_w, backend="native")._native_resize(frame, native_backend.library, rule)
        order = resample.vertical_first(height, width, out_h, out_w, rule)
        np.testing.assert_array_equal(got, resample.resize_reference(frame, out_h, out_w, vertical_first=order))


def test_pass_order_matters_and_the_probe_matches_pillow():
    rng = np.random.default_rng(3)
    frame = random_frame(rng, 64, 16)
    horizontal = resample.resize_reference(frame, 8, 8, vertical_first=False)
    vertical = resample.resize_reference(frame, 8, 8, vertical_first=True)
    assert not np.array_equal(horizontal, vertical)  # otherwise the probe could not tell
    rule = resample.pillow_pass_rule()
    expected = vertical if rule else horizontal
    np.testing.assert_array_equal(pillow_resize(frame, 8, 8), expected)


def test_reference_equals_pillow():
    rng = np.random.default_rng(4)
    rule = resample.pillow_pass_rule()
    for height, width, out_h, out_w in ((24, 32, 11, 11), (10, 7, 23, 19), (33, 12, 5, 12), (8, 8, 8, 3)):
        frame = random_frame(rng, height, width)
        order = resample.vertical_first(height, width, out_h, out_w, rule)
        np.testing.assert_array_equal(resample.resize_reference(frame, out_h, out_w, order),
                                      pillow_resize(frame, out_h, out_w))


def test_coefficients_sum_to_one_in_fixed_point():
    for in_size, out_size in ((320, 112), (240, 112), (7, 30), (112, 112)):
        bounds, taps = resample.pillow_coefficients(in_size, out_size)
        assert bounds.shape == (out_size, 2) and (bounds[:, 0] >= 0).all()
        assert (bounds[:, 0] + bounds[:, 1] <= in_size).all()
        # rounding each tap moves the sum by at most half a unit per tap
        assert np.abs(taps.sum(axis=1) - (1 << 22)).max() <= taps.shape[1]


def test_pillow_backend_gives_the_same_frames():
    rng = np.random.default_rng(5)
    frame = random_frame(rng, 240, 320)
    pillow = resample.BicubicResizer(112, 112, reverse_channels=True, backend="pillow")(frame)
    np.testing.assert_array_equal(pillow, pillow_resize(frame, 112, 112)[:, :, ::-1])


@pytest.mark.parametrize("backend", ["native", "pillow"])
def test_resize_into_a_row_of_an_array(backend):
    if backend == "native" and resample.native_state().library is None:
        pytest.skip("native resize unavailable here")
    rng = np.random.default_rng(6)
    frames = [random_frame(rng, 180, 320) for _ in range(3)]
    resizer = resample.BicubicResizer(112, 112, reverse_channels=True, backend=backend)
    stack = np.zeros((3, 112, 112, 3), np.uint8)
    for i, frame in enumerate(frames):
        assert np.shares_memory(resizer.into(frame, stack[i]), stack)
    np.testing.assert_array_equal(stack, np.stack([pillow_resize(f, 112, 112)[:, :, ::-1] for f in frames]))
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        resizer.into(frames[0], np.zeros((112, 112, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        resizer.into(frames[0], np.zeros((112, 113, 3), np.uint8))


def test_resizer_rejects_non_frames():
    resizer = resample.BicubicResizer(112, 112, backend="pillow")
    with pytest.raises(ValueError, match="uint8"):
        resizer(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        resizer(np.zeros((10, 10), np.uint8))


def test_backend_environment(monkeypatch):
    monkeypatch.setenv(resample.BACKEND_ENV, "pillow")
    assert resample.active_backend()[0] == "pillow"
    assert resample.BicubicResizer(112, 112).backend == "pillow"
    monkeypatch.setenv(resample.BACKEND_ENV, "gpu")
    with pytest.raises(ConfigError, match="AFSD_RESIZE_BACKEND"):
        resample.active_backend()


def _run_isolated(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A fresh interpreter: the native library is loaded once per process."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=REPO, timeout=300)


def test_without_a_compiler_auto_falls_back_and_native_fails_clearly(tmp_path):
    env = {"CC": "/nonexistent/cc", "AFSD_CACHE_DIR": str(tmp_path / "cache")}
    code = """
        import warnings, numpy as np
        from afsd_cli.data.video import make_resizer
        from afsd_cli.ops.bicubic_resize import BicubicResizer
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resize = make_resizer("pil-bicubic")
        assert resize.backend == "pillow", resize.backend
        print("WARN", caught[0].message)
        frame = np.arange(240 * 320 * 3, dtype=np.uint8).reshape(240, 320, 3)
        assert resize(frame).shape == (112, 112, 3)
    """
    result = _run_isolated(code, {**env, resample.BACKEND_ENV: "auto"})
    assert result.returncode == 0, result.stderr
    assert ("WARN using Pillow's (slower) resize: native resize unavailable: "
            "C compiler $CC='/nonexistent/cc' not found") in result.stdout

    code = """
        from afsd_cli.ops.bicubic_resize import active_backend
        from afsd_cli.errors import AFSDError
        try:
            active_backend()
        except AFSDError as exc:
            print("ERR", exc)
    """
    result = _run_isolated(code, {**env, resample.BACKEND_ENV: "native"})
    assert "ERR $AFSD_RESIZE_BACKEND=native but the native resize is unavailable: C compiler" in result.stdout


def test_build_is_cached_and_errors_are_one_line(tmp_path, monkeypatch):
    if native.c_compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    first = native.build_library("pil_bicubic/pil_bicubic.c", "afsd_pil_bicubic")
    stamp = first.stat().st_mtime_ns
    assert native.build_library("pil_bicubic/pil_bicubic.c", "afsd_pil_bicubic") == first
    assert first.stat().st_mtime_ns == stamp  # loaded from the cache, not rebuilt
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temporary left

    broken = tmp_path / "csrc" / "broken"
    broken.mkdir(parents=True)
    (broken / "broken.c").write_text("int f(void) { return undefined_name; }\n")
    monkeypatch.setenv(native.SOURCES_ENV, str(tmp_path / "csrc"))
    with pytest.raises(native.NativeBuildError, match="failed on broken.c: .*undefined_name"):
        native.build_library("broken/broken.c", "broken")
    with pytest.raises(native.NativeBuildError, match="not found"):
        native.build_library("missing/missing.c", "missing")
    assert not [p for p in (tmp_path / "cache" / "native").iterdir() if p.name.startswith(".")]


def test_unwritable_cache_falls_back_to_a_private_temporary_folder(tmp_path, monkeypatch):
    if native.c_compiler() is None:
        pytest.skip("no C compiler")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # the cache cannot be created below a file, even by root
    monkeypatch.setenv(native.CACHE_ENV, str(blocker / "cache"))
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = native.build_library("pil_bicubic/pil_bicubic.c", "afsd_pil_bicubic")
    assert path.parent == tmp_path / "tmp" / f"afsd-native-{os.getuid()}"
    assert path.parent.stat().st_mode & 0o077 == 0
    assert native.build_library("pil_bicubic/pil_bicubic.c", "afsd_pil_bicubic") == path  # found again

    path.parent.chmod(0o777)  # now anyone could have put a library there: neither used nor written
    with pytest.raises(native.NativeBuildError, match="no writable build folder.*not a private folder"):
        native.build_library("pil_bicubic/pil_bicubic.c", "afsd_pil_bicubic")
