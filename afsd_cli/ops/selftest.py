"""Self-test of the boundary-max-pooling backends on random input (used by ``afsd checks``).

Every backend is compared with a plain Python loop that follows the official kernel
(``AFSD/prop_pooling/boundary_max_pooling_kernel.cu``) literally: forward values,
the correct gradient and the legacy (official-kernel) gradient. Inputs are multiples of 1/4 (many
ties) and gradients small integers, so every backend must agree exactly: any difference is a bug.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from afsd_cli.ops import boundary_pooling as bmp


@dataclass
class SelfTestResult:
    backend: str
    device: str
    status: str  # "pass", "fail", "unavailable", "error"
    max_abs_diff: float | None
    milliseconds: float | None  # forward+backward at a THUMOS-like size ([2, 512, 256], S=64)
    detail: str = ""


def _bounds(a: float, b: float, length: int) -> tuple[int, int]:
    lo = min(max(int(a), 0), length - 1)  # int() truncates toward zero
    hi = min(max(int(b), 0), length - 1)
    return lo, max(lo, hi)


def loop_pool(x: torch.Tensor, segments: torch.Tensor, grad: torch.Tensor, legacy: bool):
    """(y, grad_x) by the literal rule; with ``legacy`` the gradient uses S as the temporal size."""
    batch, channels, length = x.shape
    num_segments = segments.shape[1]
    flat = x.reshape(-1).tolist()
    seg = segments.tolist()
    grads = grad.tolist()
    y = [[[0.0] * num_segments for _ in range(channels)] for _ in range(batch)]
    grad_x = [0.0] * (batch * channels * length)
    for n in range(batch):
        for c in range(channels):
            half = c // (channels // 2)
            for k in range(num_segments):
                a, b = seg[n][k][2 * half], seg[n][k][2 * half + 1]
                for misrouted in (False, True) if legacy else (False,):
                    size = num_segments if misrouted else length
                    base = (n * channels + c) * size
                    lo, hi = _bounds(a, b, size)
                    best = lo
                    for i in range(lo + 1, hi + 1):
                        if flat[base + i] > flat[base + best]:
                            best = i
                    if not misrouted:
                        y[n][c][k] = flat[base + best]
                    if misrouted == legacy:
                        grad_x[base + best] += grads[n][c][k]
    return torch.tensor(y, dtype=torch.float64), torch.tensor(grad_x, dtype=torch.float64).view(x.shape)


def random_case(batch: int, channels: int, length: int, num_segments: int, generator: torch.Generator):
    """Quantised input with ties and segments reaching outside [0, T-1], reversed and fractional."""
    x = torch.randint(-8, 9, (batch, channels, length), generator=generator).double() / 4
    start = torch.rand(batch, num_segments, 2, generator=generator) * (length + 8) - 4
    width = torch.rand(batch, num_segments, 2, generator=generator) * length / 2 - 2
    # float32 arithmetic, then widened: the values are exact in float32 and float64 alike.
    segments = torch.stack((start, start + width), dim=-1).reshape(batch, num_segments, 4).double()
    grad = torch.randint(-3, 4, (batch, channels, num_segments), generator=generator).double()
    return x, segments, grad


def _run(x, segments, grad, legacy: bool):
    x = x.detach().clone().requires_grad_(True)
    y = bmp.boundary_max_pool(x, segments, legacy_grad=legacy)
    y.backward(grad)
    return y.detach(), x.grad


def _time_ms(device: torch.device, generator: torch.Generator, repeats: int) -> float:
    x = torch.rand(2, 512, 256, generator=generator).to(device).requires_grad_(True)
    centre = torch.rand(2, 64, 1, generator=generator) * 256
    segments = (centre + torch.tensor([-12.0, 16.0, 48.0, 70.0])).to(device)
    samples = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        bmp.boundary_max_pool(x, segments).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - started)
    timed = samples[1:]
    return sorted(timed)[len(timed) // 2] * 1000  # median, first (warm-up) call excluded


def _check_backend(name: str, device: torch.device, cases, generator, repeats: int) -> SelfTestResult:
    worst = 0.0
    for x, segments, grad, expected_y, expected_grad, expected_legacy in cases:
        args = (x.to(device, torch.float32), segments.to(device, torch.float32), grad.to(device, torch.float32))
        y, grad_x = _run(*args, legacy=False)
        _, legacy_grad_x = _run(*args, legacy=True)
        for got, want in ((y, expected_y), (grad_x, expected_grad), (legacy_grad_x, expected_legacy)):
            worst = max(worst, (got.double().cpu() - want).abs().max().item())
    milliseconds = _time_ms(device, generator, repeats)
    status = "pass" if worst == 0.0 else "fail"
    return SelfTestResult(name, device.type, status, worst, milliseconds)


def self_test(seed: int = 0, timing_repeats: int = 5) -> list[SelfTestResult]:
    """Compare every backend (CUDA if a GPU is present, C++ CPU, PyTorch reference) with the loop rule."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for shape in ((2, 8, 40, 12), (1, 6, 12, 12), (2, 4, 5, 3)):  # misrouted legacy, S == T, tiny T
        x, segments, grad = random_case(*shape, generator)
        expected_y, expected_grad = loop_pool(x, segments, grad, legacy=False)
        _, expected_legacy = loop_pool(x, segments, grad, legacy=True)
        cases.append((x, segments, grad, expected_y, expected_grad, expected_legacy))
    plan = [("cuda", torch.device("cuda")), ("cpp", torch.device("cpu")), ("reference", torch.device("cpu"))]
    if torch.cuda.is_available():
        plan.append(("reference", torch.device("cuda")))
    infos = {info.name: info for info in bmp.available_backends(build=True)}
    results = []
    for name, device in plan:
        if name == "cuda" and not torch.cuda.is_available():
            results.append(SelfTestResult(name, "cuda", "unavailable", None, None, "no CUDA device"))
            continue
        if not infos[name].available:
            results.append(SelfTestResult(name, device.type, "unavailable", None, None, infos[name].detail))
            continue
        try:
            with bmp.use_backend(name):
                results.append(_check_backend(name, device, cases, generator, timing_repeats))
        except Exception as exc:  # noqa: BLE001 - a crashing backend is a failed check, not a crash
            results.append(SelfTestResult(name, device.type, "error", None, None, f"{type(exc).__name__}: {exc}"))
    return results
