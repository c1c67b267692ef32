"""Forward time of the AFSD network per window, split into backbone and head.

    .venv/bin/python benchmarks/bench_model.py [--threads 1 2] [--repeats 3] [--device cpu|cuda]

Prints a markdown table: one row per (preset, threads), median seconds of ``repeats`` timed
forwards after one warm-up, in eval mode under ``torch.inference_mode``. Weights are random
(speed does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from afsd_cli.model import AFSD, anet_spec, thumos14_spec

PRESETS = {
    "thumos14 256×96² rgb": thumos14_spec(),
    "thumos14 256×96² flow": thumos14_spec(in_channels=2),
    "anet 768×96² rgb": anet_spec(),
    "small 64×32² (tests/demo)": thumos14_spec(clip_length=64, crop_size=32, num_classes=5),
}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_forward(spec, device: str, repeats: int) -> tuple[float, float]:
    model = AFSD(spec).eval().to(device)
    clip = torch.rand(1, spec.in_channels, spec.clip_length, spec.crop_size, spec.crop_size, device=device) * 2 - 1
    totals, backbones = [], []
    with torch.inference_mode():
        for attempt in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            features = model.backbone(clip, spec.head.pyramid_sources)
            _sync(device)
            middle = time.perf_counter()
            model.coarse_pyramid_detection(features)
            _sync(device)
            end = time.perf_counter()
            if attempt:  # the first pass warms allocators and kernels
                totals.append(end - start)
                backbones.append(middle - start)
    return statistics.median(totals), statistics.median(backbones)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    args = parser.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device: {args.device}, torch {torch.__version__}, load average at start {load:.1f}\n")
    print("| preset | threads | forward s/window | backbone s | head s | frames/s |")
    print("|---|---|---|---|---|---|")
    for name in args.presets:
        spec = PRESETS[name]
        for threads in args.threads if args.device == "cpu" else [torch.get_num_threads()]:
            torch.set_num_threads(threads)
            total, backbone = time_forward(spec, args.device, args.repeats)
            print(
                f"| {name} | {threads} | {total:.3f} | {backbone:.3f} | {total - backbone:.3f} "
                f"| {spec.clip_length / total:.0f} |"
            )


if __name__ == "__main__":
    main()
