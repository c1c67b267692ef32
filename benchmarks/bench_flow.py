"""Optical-flow throughput and accuracy, side by side, on 112x112 frame pairs.

Prints a markdown table: frame pairs per second for each method (and each TV-L1 preset /
batch size / device), plus the end-point error (EPE, px) and the share of uint8 flow values
within ±1 against OpenCV-contrib's CPU TV-L1 on the committed excerpt
(tests/data/flow/bikes_excerpt.npz, 3 real pairs with large motion).

    PYTHONPATH=. python benchmarks/bench_flow.py                       # CPU, all methods
    PYTHONPATH=. python benchmarks/bench_flow.py --device cuda --pairs 1024 --batch-sizes 256 1024
    PYTHONPATH=. python benchmarks/bench_flow.py --contrib-python /path/to/venv/bin/python

``--contrib-python`` times ``cv2.optflow.DualTVL1OpticalFlow`` in another interpreter that has
opencv-contrib-python (it cannot live beside the project's opencv-python) on the same pairs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from afsd_cli.data.flow import available_methods, quantize_flow  # noqa: E402
from afsd_cli.data.flow.api import _flow_of_grey, to_grey  # noqa: E402

EXCERPT = REPO / "tests" / "data" / "flow" / "bikes_excerpt.npz"

CONTRIB_SNIPPET = """
import sys, time, json, numpy as np, cv2
cv2.setNumThreads(int(sys.argv[2]))
grey = np.load(sys.argv[1])
tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
tvl1.calc(grey[0], grey[1], None)
start = time.perf_counter()
for t in range(len(grey) - 1):
    tvl1.calc(grey[t], grey[t + 1], None)
print(json.dumps({"seconds": time.perf_counter() - start, "pairs": len(grey) - 1,
                  "version": cv2.__version__}))
"""


def varied_frames(frames: np.ndarray, pairs: int) -> np.ndarray:
    """Grey frames giving ``pairs`` consecutive pairs: the excerpt under the 8 flips/rotations,
    chained so every pair is a real pair (the joins between variants are real pairs too)."""
    grey = to_grey(frames)
    variants = []
    for k in range(4):
        for flip in (False, True):
            clip = np.rot90(grey, k, axes=(1, 2))
            variants.append(clip[:, :, ::-1] if flip else clip)
    chain = np.concatenate(variants)
    reps = int(np.ceil((pairs + 1) / len(chain)))
    return np.ascontiguousarray(np.concatenate([chain] * reps)[: pairs + 1])


def accuracy(method: str, device: str, options: dict, data) -> tuple[float, float]:
    grey = to_grey(data["frames"])
    reference = data["flow_opencv_tvl1"].astype(np.float32)
    flow = _flow_of_grey(grey, method, device, 64, dict(options))
    epe = float(np.sqrt(((flow - reference) ** 2).sum(-1)).mean())
    within = float((np.abs(quantize_flow(flow).astype(int) - quantize_flow(reference).astype(int)) <= 1).mean())
    return epe, within


def throughput(method: str, device: str, options: dict, grey: np.ndarray, batch: int, repeats: int) -> float:
    warm = grey[: min(len(grey), batch + 1)]
    _flow_of_grey(warm, method, device, batch, dict(options))  # warm-up: allocations, compile
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        start = time.perf_counter()
        _flow_of_grey(grey, method, device, batch, dict(options))
        best = min(best, time.perf_counter() - start)
    return (len(grey) - 1) / best


def contrib_row(python: str, grey: np.ndarray, threads: int) -> dict | None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "grey.npy"
        np.save(path, grey)
        result = subprocess.run([python, "-c", CONTRIB_SNIPPET, str(path), str(threads)],
                                capture_output=True, text=True)
    if result.returncode != 0:
        print(f"<!-- contrib run failed: {result.stderr.strip()[-300:]} -->")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="device for the tvl1 rows (cpu or cuda)")
    parser.add_argument("--pairs", type=int, default=24, help="frame pairs timed per row")
    parser.add_argument("--cpu-pairs", type=int, default=None, help="pairs for CPU-only methods")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[24])
    parser.add_argument("--presets", nargs="+", default=["opencv", "balanced", "fast"])
    parser.add_argument("--methods", nargs="+", default=["tvl1", "opencv-tvl1", "dis", "farneback"])
    parser.add_argument("--compile", action="store_true", help="also time tvl1 with torch.compile")
    parser.add_argument("--compile-only", action="store_true", help="time tvl1 only with torch.compile")
    parser.add_argument("--check-every", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenCV CPU threads")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--contrib-python", default=None,
                        help="python with opencv-contrib-python, to time OpenCV's TV-L1 alongside")
    args = parser.parse_args()

    import cv2
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    data = np.load(EXCERPT)
    grey = varied_frames(data["frames"], args.pairs)
    cpu_grey = varied_frames(data["frames"], args.cpu_pairs or args.pairs)
    if args.device.startswith("cuda"):
        machine = torch.cuda.get_device_name(0)
    else:
        machine = f"CPU, {torch.get_num_threads()} torch threads"
    print(f"# Optical flow at 112x112 ({machine}; torch {torch.__version__}, OpenCV {cv2.__version__})\n")
    print("| method | options | device | batch | pairs/s | EPE vs OpenCV TV-L1 (px) | uint8 within ±1 |")
    print("|---|---|---|---|---:|---:|---:|")
    available = available_methods()
    for method in args.methods:
        if method == "opencv-tvl1" and not available[method][0]:
            if args.contrib_python:
                row = contrib_row(args.contrib_python, cpu_grey, args.threads or 1)
                if row:
                    rate = row["pairs"] / row["seconds"]
                    print(f"| opencv-tvl1 (contrib {row['version']}, other venv) | defaults | cpu "
                          f"({args.threads or 1} thr) | 1 | {rate:.2f} | 0 (reference) | 100 % |")
            else:
                print("| opencv-tvl1 | — | — | — | unavailable (no opencv-contrib; see --contrib-python) | | |")
            continue
        if not available[method][0]:
            print(f"| {method} | — | — | — | unavailable: {available[method][1]} | | |")
            continue
        if method == "tvl1":
            combos = [(preset, batch, compiled, check)
                      for preset in args.presets for batch in args.batch_sizes
                      for compiled in ([True] if args.compile_only else [False, True] if args.compile else [False])
                      for check in args.check_every]
            for preset, batch, compiled, check in combos:
                options = dict(preset=preset, compile=compiled, check_every=check)
                epe, within = accuracy(method, args.device, dict(preset=preset), data)
                rate = throughput(method, args.device, options, grey, batch, args.repeats)
                label = f"preset={preset}" + (", compiled" if compiled else "") + (f", check_every={check}" if check else "")
                print(f"| tvl1 | {label} | {args.device} | {batch} | {rate:.1f} | {epe:.3f} | {within * 100:.1f} % |")
                sys.stdout.flush()
            continue
        option_sets = {"dis": [dict(preset="medium"), dict(preset="fast")], "farneback": [{}]}.get(method, [{}])
        for options in option_sets:
            epe, within = accuracy(method, "cpu", options, data)
            rate = throughput(method, "cpu", options, cpu_grey, 1, args.repeats)
            label = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
            print(f"| {method} | {label} | cpu | 1 | {rate:.1f} | {epe:.3f} | {within * 100:.1f} % |")


if __name__ == "__main__":
    main()
