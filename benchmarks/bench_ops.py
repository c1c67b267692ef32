"""Benchmark of boundary max pooling: compiled backends vs. the pure-PyTorch reference.

Workloads are the BMP calls of one AFSD forward pass at the real sizes (official CoarsePyramid.forward):
every pyramid level pools the level feature ``[B, 1024, t]`` with ``S = t`` segments and the frame
feature ``[B, 512, T]`` with the same ``S = t`` segments (THUMOS14: T = 256, t = 64..2; ActivityNet:
T = 768, t = 96..3). Segments follow CoarsePyramid.forward from random predicted distances. Prints a markdown table;
all ratios are measured side by side in one run.

    python benchmarks/bench_ops.py                 # cuda if a GPU is visible, else cpu
    python benchmarks/bench_ops.py --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))

import torch  # noqa: E402

from afsd_cli.ops import boundary_pooling as bmp  # noqa: E402
from afsd_cli.ops import extension  # noqa: E402

DATASETS = {"THUMOS14": (256, [64, 32, 16, 8, 4, 2]), "ActivityNet": (768, [96, 48, 24, 12, 6, 3])}


def afsd_segments(batch: int, clip: int, level: int, generator: torch.Generator):
    """(level-resolution, frame-resolution) segments of one pyramid level, as CoarsePyramid.forward."""
    distances = torch.rand(batch, level, 2, generator=generator) * clip / 4  # predicted (l, r) in frames
    left, right = distances[..., 0], distances[..., 1]
    centre = torch.arange(level, dtype=torch.float32) + 0.5  # p_c * t
    lvl_left, lvl_right = left * level / clip, right * level / clip
    q = torch.round(centre - 0.5)
    length = lvl_left + lvl_right
    inner, outer = (length / 4).clamp(min=1), (length / 10).clamp(min=1)
    a, b = q - lvl_left, q + lvl_right
    seg = torch.stack([torch.round(a - outer), torch.round(a + inner), torch.round(b - inner), torch.round(b + outer)], -1)
    start, end = centre * clip / level - left, centre * clip / level + right
    flen = end - start + 1
    finner, fouter = (flen / 4).clamp(min=1), (flen / 10).clamp(min=1)
    fseg = torch.stack(
        [torch.round(start - fouter), torch.round(start + finner), torch.round(end - finner), torch.round(end + fouter)], -1
    )
    return seg, fseg


def workload(dataset: str, batch: int, device: torch.device, generator: torch.Generator):
    """List of (x, segments) BMP calls of one forward pass."""
    clip, levels = DATASETS[dataset]
    frame = torch.rand(batch, 512, clip, generator=generator)
    calls = []
    for level in levels:
        seg, fseg = afsd_segments(batch, clip, level, generator)
        feature = torch.rand(batch, 1024, level, generator=generator)
        calls.append((feature.to(device), seg.to(device)))
        calls.append((frame.to(device), fseg.to(device)))
    return calls


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(calls, backend: str, backward: bool, repeats: int, device: torch.device) -> float:
    """Median milliseconds of one pass over every call (forward, or forward + one backward of the summed
    outputs, as a training step does)."""
    inputs = [(x.detach().clone().requires_grad_(backward), s) for x, s in calls]
    samples = []
    with bmp.use_backend(backend), torch.set_grad_enabled(backward):
        for _ in range(repeats + 2):  # two warm-up rounds
            sync(device)
            started = time.perf_counter()
            outputs = [bmp.boundary_max_pool(x, segments) for x, segments in inputs]
            if backward:
                torch.autograd.backward([y.sum() for y in outputs])
            sync(device)
            samples.append(time.perf_counter() - started)
    return statistics.median(samples[2:]) * 1000


def time_algorithm(calls, algorithm: str, repeats: int, device: torch.device) -> float:
    samples = []
    for _ in range(repeats + 2):
        sync(device)
        started = time.perf_counter()
        for x, segments in calls:
            bmp.compiled_forward(x, segments, algorithm, with_argmax=True)
        sync(device)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples[2:]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    compiled = "cuda" if device.type == "cuda" else "cpp"
    started = time.perf_counter()
    state = extension.load_extension()
    load_seconds = time.perf_counter() - started
    available = state.cuda if compiled == "cuda" else state.cpu
    if not available:
        sys.exit(f"compiled {compiled} backend unavailable: {state.errors.get(compiled)}")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}); torch {torch.__version__}; CPU threads {torch.get_num_threads()}; "
          f"extension load/build {load_seconds:.2f} s; median of {args.repeats}\n")
    print(f"| workload (one AFSD forward's BMP calls) | pass | reference ms | {compiled} ms | speed-up |")
    print("|---|---|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    cases = []
    for dataset in DATASETS:
        for batch in [int(b) for b in args.batches.split(",")]:
            calls = workload(dataset, batch, device, generator)
            cases.append((dataset, batch, calls))
            for backward in (False, True):
                ref = time_calls(calls, "reference", backward, args.repeats, device)
                fast = time_calls(calls, compiled, backward, args.repeats, device)
                label = "fwd+bwd" if backward else "fwd"
                print(f"| {dataset} B={batch} ({len(calls)} calls) | {label} | {ref:.3f} | {fast:.3f} | "
                      f"{ref / fast:.1f}x |")

    # Beyond AFSD: long rows and many long ranges, where the sparse table should win.
    stress_x = torch.rand(8, 512, 2048, generator=generator).to(device)
    centre = torch.rand(8, 256, 1, generator=generator) * 2048
    stress_seg = (centre + torch.tensor([-400.0, 200.0, -200.0, 400.0])).to(device)
    cases.append(("stress [8,512,2048] S=256 ranges ~600", 8, [(stress_x, stress_seg)]))
    algorithms = ("scan", "column_scan", "sparse_table", "auto")
    print("\n| workload (forward only, compiled op called directly) | "
          + " | ".join(f"{compiled} {name} ms" for name in algorithms) + " |")
    print("|---|" + "---:|" * len(algorithms))
    for dataset, batch, calls in cases:
        times = [time_algorithm(calls, algorithm, args.repeats, device) for algorithm in algorithms]
        label = dataset if dataset.startswith("stress") else f"{dataset} B={batch}"
        print(f"| {label} | " + " | ".join(f"{t:.3f}" for t in times) + " |")


if __name__ == "__main__":
    main()
