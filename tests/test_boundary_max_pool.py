"""Boundary max pooling: every available backend against a plain Python loop of the official
CUDA kernel's semantics (``AFSD/prop_pooling/boundary_max_pooling_kernel.cu``)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

# Compile once into the repo's git-ignored cache (unless the caller chose a folder).
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))

import torch  # noqa: E402

from afsd_cli.errors import ConfigError  # noqa: E402
from afsd_cli.ops import boundary_pooling as bmp  # noqa: E402
from afsd_cli.ops import extension  # noqa: E402
from afsd_cli.ops import boundary_max_pool, self_test  # noqa: E402

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
BACKENDS = [
    pytest.param(("reference", "cpu"), id="reference-cpu"),
    pytest.param(("cpp", "cpu"), id="cpp-cpu"),
    pytest.param(("reference", "cuda"), id="reference-cuda", marks=requires_gpu),
    pytest.param(("cuda", "cuda"), id="cuda", marks=requires_gpu),
]


# ---------------------------------------------------------------------------------------------
# The oracle: the rule written out with Python numbers, one output at a time.


def loop_bounds(a: float, b: float, size: int) -> tuple[int, int]:
    lo = min(max(int(a), 0), size - 1)  # int() truncates toward zero, as the C cast does
    hi = min(max(int(b), 0), size - 1)
    return lo, hi


def loop_first_argmax(values: list[float], base: int, lo: int, hi: int) -> int:
    best = lo
    for i in range(lo + 1, hi + 1):  # hi < lo: no iteration, the result is x[lo]
        if values[base + i] > values[base + best]:
            best = i
    return best


def loop_pool(x: torch.Tensor, segments: torch.Tensor):
    """(y, argmax) following the official kernel literally."""
    batch, channels, length = x.shape
    num_segments = segments.shape[1]
    flat, seg = x.double().reshape(-1).tolist(), segments.double().tolist()
    y = torch.zeros(batch, channels, num_segments, dtype=torch.float64)
    argmax = torch.zeros(batch, channels, num_segments, dtype=torch.long)
    for n in range(batch):
        for c in range(channels):
            half = c // (channels // 2)
            for k in range(num_segments):
                lo, hi = loop_bounds(seg[n][k][2 * half], seg[n][k][2 * half + 1], length)
                best = loop_first_argmax(flat, (n * channels + c) * length, lo, hi)
                y[n, c, k] = flat[(n * channels + c) * length + best]
                argmax[n, c, k] = best
    return y, argmax


def loop_grad(grad: torch.Tensor, argmax: torch.Tensor, length: int) -> torch.Tensor:
    batch, channels, num_segments = grad.shape
    grad_x = torch.zeros(batch, channels, length, dtype=torch.float64)
    for n in range(batch):
        for c in range(channels):
            for k in range(num_segments):
                grad_x[n, c, argmax[n, c, k]] += float(grad[n, c, k])
    return grad_x


def loop_legacy_grad(grad: torch.Tensor, x: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The official kernel's backward: flat index n*C*S + c*S + i, bounds clamped to [0, S-1]."""
    batch, channels, length = x.shape
    num_segments = segments.shape[1]
    flat, seg = x.double().reshape(-1).tolist(), segments.double().tolist()
    grad_flat = [0.0] * (batch * channels * length)
    for n in range(batch):
        for c in range(channels):
            half = c // (channels // 2)
            base = n * channels * num_segments + c * num_segments
            for k in range(num_segments):
                lo, hi = loop_bounds(seg[n][k][2 * half], seg[n][k][2 * half + 1], num_segments)
                grad_flat[base + loop_first_argmax(flat, base, lo, hi)] += float(grad[n, c, k])
    return torch.tensor(grad_flat, dtype=torch.float64).view(batch, channels, length)


# ---------------------------------------------------------------------------------------------
# Inputs


def tied_input(batch, channels, length, seed=0, dtype=torch.float32):
    """Multiples of 1/2 in [-4, 4]: exact in every float dtype, lots of ties."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(-8, 9, (batch, channels, length), generator=generator).float() / 2).to(dtype)


def nasty_segments(batch, num_segments, length, seed=0):
    """Negative, beyond T, fractional (incl. in (-1, 0)), reversed and exactly integral bounds."""
    generator = torch.Generator().manual_seed(seed + 1)
    lo = torch.rand(batch, num_segments, 2, generator=generator) * (length + 10) - 5
    hi = lo + torch.rand(batch, num_segments, 2, generator=generator) * (length / 2 + 4) - 4
    segments = torch.stack((lo, hi), dim=-1).reshape(batch, num_segments, 4)
    segments[:, 0] = torch.tensor([-0.5, 0.99, length - 0.5, length + 3.7])
    segments[:, 1] = torch.tensor([3.0, 1.0, -7.2, 2.0])  # reversed start range and a "-7.2 .. 2" range
    return segments


@pytest.fixture
def backend(request, monkeypatch):
    name, device = request.param
    monkeypatch.setenv(bmp.BACKEND_ENV, name)
    if name == "cpp" and not extension.load_extension().cpu:
        pytest.skip(f"C++ backend does not build here: {extension.load_extension().errors.get('cpp')}")
    return torch.device(device)


def pool(x, segments, legacy=False, grad=None):
    x = x.detach().clone().requires_grad_(True)
    y = boundary_max_pool(x, segments, legacy_grad=legacy)
    y.backward(torch.ones_like(y) if grad is None else grad)
    return y.detach(), x.grad


# ---------------------------------------------------------------------------------------------
# Forward and the correct backward


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("shape", [(2, 8, 37, 11), (1, 4, 1, 3), (3, 2, 6, 9)])
def test_matches_loop_with_ties_and_odd_segments(backend, shape):
    batch, channels, length, num_segments = shape
    x = tied_input(batch, channels, length)
    segments = nasty_segments(batch, num_segments, length)
    grad = torch.randint(-3, 4, (batch, channels, num_segments), generator=torch.Generator().manual_seed(5)).float()
    want_y, want_argmax = loop_pool(x, segments)
    y, grad_x = pool(x.to(backend), segments.to(backend), grad=grad.to(backend))
    assert y.dtype == x.dtype and y.shape == (batch, channels, num_segments)
    assert torch.equal(y.double().cpu(), want_y)
    assert torch.equal(grad_x.double().cpu(), loop_grad(grad, want_argmax, length))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes(backend, dtype):
    x = tied_input(2, 6, 25, seed=3, dtype=dtype)
    segments = nasty_segments(2, 7, 25, seed=3).to(dtype)  # same dtype as the input, as in AFSD
    want_y, want_argmax = loop_pool(x, segments)
    y, grad_x = pool(x.to(backend), segments.to(backend))
    assert y.dtype == dtype
    assert torch.equal(y.double().cpu(), want_y)
    # Small integer counts: exact in half precision too.
    assert torch.equal(grad_x.double().cpu(), loop_grad(torch.ones(2, 6, 7), want_argmax, 25))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_huge_infinite_and_nan_segments_clamp(backend):
    x = tied_input(1, 4, 10, seed=4)
    inf, nan = float("inf"), float("nan")
    segments = torch.tensor([[[-inf, inf, 1e30, -1e30], [nan, 3.0, 2.0, nan], [1e10, 1e10, -1e10, -1e10]]])
    finite = torch.tensor([[[0.0, 9.0, 9.0, 0.0], [0.0, 3.0, 2.0, 0.0], [9.0, 9.0, 0.0, 0.0]]])  # NaN -> 0
    y, grad_x = pool(x.to(backend), segments.to(backend))
    want_y, want_argmax = loop_pool(x, finite)
    assert torch.equal(y.double().cpu(), want_y)
    assert torch.equal(grad_x.double().cpu(), loop_grad(torch.ones(1, 4, 3), want_argmax, 10))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_minus_infinity_and_nan_inputs(backend):
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([[[1.0, -inf, -inf, 5.0, 5.0], [nan, 2.0, nan, 7.0, 1.0]]])
    segments = torch.tensor([[[1.0, 2.0, 0.0, 4.0], [0.0, 4.0, 1.0, 4.0]]])
    y, grad_x = pool(x.to(backend), segments.to(backend))
    # Row 0 pools [1, 2] and [0, 4]; row 1 pools [0, 4] and [1, 4]. NaN wins over numbers (torch.max).
    assert y[0, 0].tolist() == [-inf, 5.0]
    assert torch.isnan(y[0, 1]).all()
    assert grad_x.cpu().tolist() == [[[0.0, 1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0, 0.0]]]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_gradcheck_float64_without_ties(backend):
    generator = torch.Generator().manual_seed(7)
    x = (torch.randperm(2 * 4 * 30, generator=generator).double() / 10).view(2, 4, 30).to(backend)
    segments = nasty_segments(2, 6, 30, seed=7).double().to(backend)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: boundary_max_pool(t, segments), (x,), eps=1e-3, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_no_gradient_to_segments_and_no_grad_mode(backend):
    x = tied_input(1, 4, 12).to(backend).requires_grad_(True)
    segments = nasty_segments(1, 5, 12).to(backend).requires_grad_(True)
    y = boundary_max_pool(x, segments)
    y.sum().backward()
    assert segments.grad is None and x.grad is not None
    with torch.no_grad():
        assert torch.equal(boundary_max_pool(x, segments), y.detach())


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_empty_shapes(backend):
    x = torch.randn(2, 4, 8, device=backend)
    assert boundary_max_pool(x, torch.zeros(2, 0, 4, device=backend)).shape == (2, 4, 0)
    assert boundary_max_pool(torch.randn(0, 4, 8, device=backend), torch.zeros(0, 3, 4, device=backend)).shape == (
        0, 4, 3,
    )


# ---------------------------------------------------------------------------------------------
# Legacy (official kernel) backward


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("shape", [(2, 6, 32, 8), (1, 4, 9, 9), (2, 2, 20, 3)])
def test_legacy_backward_matches_loop(backend, shape):
    batch, channels, length, num_segments = shape
    x = tied_input(batch, channels, length, seed=11)
    segments = nasty_segments(batch, num_segments, length, seed=11)
    grad = torch.randint(-3, 4, (batch, channels, num_segments), generator=torch.Generator().manual_seed(2)).float()
    y, grad_x = pool(x.to(backend), segments.to(backend), legacy=True, grad=grad.to(backend))
    assert torch.equal(y.double().cpu(), loop_pool(x, segments)[0])  # the forward is unaffected
    assert torch.equal(grad_x.double().cpu(), loop_legacy_grad(grad, x, segments))
    if num_segments == length:  # the official backward was right in this case
        assert torch.equal(grad_x.double().cpu(), loop_grad(grad, loop_pool(x, segments)[1], length))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_legacy_backward_rejects_more_segments_than_frames(backend):
    x = torch.randn(1, 2, 3, device=backend, requires_grad=True)
    with pytest.raises((ValueError, RuntimeError), match="S <= T"):
        boundary_max_pool(x, torch.zeros(1, 4, 4, device=backend), legacy_grad=True)


# ---------------------------------------------------------------------------------------------
# Compiled kernels: both forward algorithms, bigger rows


@pytest.mark.parametrize(
    "device, length",
    # 1500 frames: the CUDA sparse table needs more than the default 48 KiB of shared memory.
    [("cpu", 600), pytest.param("cuda", 600, marks=requires_gpu), pytest.param("cuda", 1500, marks=requires_gpu)],
)
@pytest.mark.parametrize("algorithm", ["scan", "column_scan", "sparse_table", "auto"])
def test_compiled_algorithms_agree_on_long_rows(device, length, algorithm):
    if not extension.load_extension().cpu:
        pytest.skip(f"compiled op does not build here: {extension.load_extension().errors.get('cpp')}")
    x = tied_input(2, 16, length, seed=13)
    segments = nasty_segments(2, 40, length, seed=13)
    want_y, want_argmax = loop_pool(x, segments)
    y, argmax = bmp.compiled_forward(x.to(device), segments.to(device), algorithm)
    assert torch.equal(y.double().cpu(), want_y)
    assert torch.equal(argmax.cpu(), want_argmax)


def test_compiled_forward_rejects_bad_shapes():
    """The C++ checks raise RuntimeError. Run in a child process: on some images (seen with torch 2.11 +
    GCC 13 on the lent GPU machine) any exception thrown from a freshly compiled extension, even a
    three-line torch/extension.h one, kills the process; that must fail this test, not the whole run."""
    if not extension.load_extension().cpu:
        pytest.skip("compiled op does not build here")
    code = (
        "import torch\n"
        "from afsd_cli.ops.extension import compiled_ops\n"
        "ops = compiled_ops()\n"
        "for x, s in (((1, 3, 4), (1, 2, 4)), ((1, 2, 4), (1, 2, 3)), ((2, 2, 4), (1, 2, 4))):\n"
        "    try:\n"
        "        ops.forward(torch.zeros(x), torch.zeros(s), True, 0)\n"
        "    except RuntimeError as exc:\n"
        "        print('raised:', str(exc).splitlines()[0])\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, f"child exited with {done.returncode}: {done.stderr[-2000:]}"
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert "channel count must be even" in lines[0]
    assert "segments must be [B, S, 4]" in lines[1]
    assert "batch sizes differ" in lines[2]


# ---------------------------------------------------------------------------------------------
# Dispatch, fallback and API checks


def test_invalid_inputs_raise_value_error():
    with pytest.raises(ValueError, match="channel count must be even"):
        boundary_max_pool(torch.zeros(1, 3, 4), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="batch sizes differ"):
        boundary_max_pool(torch.zeros(2, 2, 4), torch.zeros(1, 2, 4))


def test_unknown_backend_name(monkeypatch):
    monkeypatch.setenv(bmp.BACKEND_ENV, "fastest")
    with pytest.raises(ConfigError, match="AFSD_BMP_BACKEND"):
        boundary_max_pool(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))


def test_failed_build_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(extension, "_state", extension.ExtensionState(attempted=True, errors={"cpp": "no compiler"}))
    monkeypatch.setattr(bmp, "_warned", False)
    monkeypatch.setenv(bmp.BACKEND_ENV, "auto")
    x, segments = tied_input(1, 4, 9), nasty_segments(1, 3, 9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = boundary_max_pool(x, segments)
        boundary_max_pool(x, segments)
    assert [str(w.message) for w in caught if "boundary_max_pool" in str(w.message)] == [
        "boundary_max_pool: compiled kernels unavailable (no compiler); using the slower pure-PyTorch "
        "implementation (set AFSD_BMP_BACKEND=reference to choose it explicitly)"
    ]
    assert torch.equal(first.double(), loop_pool(x, segments)[0])
    monkeypatch.setenv(bmp.BACKEND_ENV, "cpp")  # a forced backend never falls back silently
    with pytest.raises(RuntimeError, match="no compiler"):
        boundary_max_pool(x, segments)
    assert [b.available for b in bmp.available_backends(build=False)] == [False, False, True]


def test_sources_found_and_cache_dir_from_env(monkeypatch, tmp_path):
    assert extension.source_dir() is not None
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert extension.extensions_root() == tmp_path
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert extension.extensions_root() == tmp_path / "xdg" / "afsd" / "torch_extensions"


def test_self_test_passes_for_loaded_backends():
    results = self_test(seed=1, timing_repeats=1)
    by_name = {(r.backend, r.device): r for r in results}
    assert by_name[("reference", "cpu")].status == "pass"
    for result in results:
        assert result.status in ("pass", "unavailable"), result
        if result.status == "pass":
            assert result.max_abs_diff == 0.0 and result.milliseconds > 0


def test_reference_chunks_segments_without_changing_results(monkeypatch):
    from afsd_cli.ops import boundary_pooling_reference as reference

    x, segments = tied_input(2, 6, 30, seed=21), nasty_segments(2, 13, 30, seed=21)
    whole = reference.forward_reference(x, segments)
    monkeypatch.setattr(reference, "_MASKED_ELEMENTS", 2 * 6 * 30 * 4)  # 4 segments per chunk
    chunked = reference.forward_reference(x, segments)
    want_y, want_argmax = loop_pool(x, segments)
    for got in (whole, chunked):
        assert torch.equal(got[0].double(), want_y) and torch.equal(got[1], want_argmax)
