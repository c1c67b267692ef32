"""Inference speed of the THUMOS14 AFSD model: frames/s end to end, per batch size and precision.

    PYTHONPATH=. python benchmarks/bench_predict.py --device cpu --threads 2 --videos 1 --frames 640 \\
        --batch-sizes 1,2,4
    PYTHONPATH=. python benchmarks/bench_predict.py --device cuda --videos 24 --frames 1800 \\
        --batch-sizes 1,8,16,32 --dtypes fp32,bf16,fp16 --workers 8

Every configuration runs the full ``Predictor`` path (windows → batched forward → decode →
per-class soft-NMS) on in-memory uint8 arrays of ``--frames`` 10 fps frames, after one warm-up
video. "frames/s" = sampled video frames / wall time (what the paper's 3259 frames/s on a GTX
1080 Ti measures); "network frames/s" counts only the time spent in forward passes. The weights
are the seeded test weights (tests/helpers/inference_parity.py): they leave thousands of candidates above
the 0.01 threshold per video, a pessimistic load for soft-NMS compared with a trained model.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import helpers.inference_parity as P  # noqa: E402
from afsd_cli.data.annotations import thumos14_class_index  # noqa: E402
from afsd_cli.engine.inference import Predictor  # noqa: E402
from afsd_cli.engine.jobs import LoadedVideo, VideoJob  # noqa: E402
from afsd_cli.engine.postprocess import PostprocessSettings  # noqa: E402
from afsd_cli.model import AFSD, thumos14_spec  # noqa: E402


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def run(model, frames: np.ndarray, videos: int, batch: int, dtype: str, device: str, workers: int) -> dict:
    amp = None if dtype == "fp32" else dtype
    L, crop = model.spec.clip_length, model.spec.crop_size
    predictor = Predictor([model], PostprocessSettings(clip_length=L), thumos14_class_index().names, L, L // 2, crop,
                          device=device, batch_size=batch, amp=amp)
    jobs = [VideoJob(f"v{i}", lambda: LoadedVideo([frames]), 10.0, frames.shape[0] / 10.0) for i in range(videos)]
    list(predictor.run(jobs[:1], postprocess_workers=workers))  # warm-up: cuDNN autotuning, worker start-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = list(predictor.run(jobs, postprocess_workers=workers))
    wall = time.perf_counter() - start
    predictor.close()
    total = sum(r.frames for r in results)
    network = sum(r.timings.get("network", 0.0) for r in results)
    return {
        "frames": total, "windows": sum(r.windows for r in results), "wall": wall,
        "fps": total / wall, "network_fps": total / network if network else float("nan"),
        "decode": sum(r.timings.get("decode", 0.0) for r in results),
        "network": network, "postprocess": sum(r.timings.get("postprocess", 0.0) for r in results),
        "detections": sum(len(r.detections) for r in results) / len(results),
    }


def check_batch_invariance(model, frames: np.ndarray, device: str) -> None:
    """fp32: raw outputs and detections of batch 1 vs batch 3 on the same windows."""
    names = thumos14_class_index().names
    L, crop = model.spec.clip_length, model.spec.crop_size
    predictor = {b: Predictor([model], PostprocessSettings(clip_length=L), names, L, L // 2, crop, device=device,
                              batch_size=b) for b in (1, 3)}
    from afsd_cli.engine.inference import center_crop, normalised_window

    clip = center_crop(frames[:640], crop)
    windows = torch.stack([normalised_window(clip, o, L) for o in (0, L // 2, L)])
    one = [predictor[1].forward(0, windows[i:i + 1]) for i in range(3)]
    three = predictor[3].forward(0, windows)
    diff = max(float((torch.cat([getattr(o, f) for o in one]) - getattr(three, f)).abs().max())
               for f in ("loc", "conf", "prop_loc", "prop_conf", "center"))
    jobs = [VideoJob("v", lambda: LoadedVideo([frames[:640]]), 10.0, None)]
    dets = {b: next(predictor[b].run(jobs)).detections for b in (1, 3)}
    same_labels = [d["label"] for d in dets[1]] == [d["label"] for d in dets[3]]
    gap = float("nan")
    if same_labels:
        gap = float(np.abs(np.array([[d["score"], *d["segment"]] for d in dets[1]])
                           - np.array([[d["score"], *d["segment"]] for d in dets[3]])).max())
    print(f"batch 1 vs 3 (fp32, {device}): raw outputs max |diff| = {diff:.3g}; detections bit-identical: "
          f"{dets[1] == dets[3]}; same count/labels/order: {same_labels} ({len(dets[1])} vs {len(dets[3])}); "
          f"max |diff| of scores/segments: {gap:.3g}\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    parser.add_argument("--videos", type=int, default=1)
    parser.add_argument("--frames", type=int, default=640, help="10 fps frames per video")
    parser.add_argument("--batch-sizes", default="1,2,4")
    parser.add_argument("--dtypes", default="fp32", help="fp32, bf16, fp16 (the latter two: CUDA autocast)")
    parser.add_argument("--workers", type=int, default=0, help="soft-NMS worker processes")
    parser.add_argument("--check", action="store_true", help="first compare batch 1 vs 3 outputs (fp32)")
    parser.add_argument("--small", action="store_true", help="a 64-frame, 32 px model (smoke test of this script)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True

    model = AFSD(thumos14_spec(in_channels=3, **({"clip_length": 64, "crop_size": 32} if args.small else {})))
    model.load_state_dict(P.seeded_state_dict(P.state_dict_layout(model.state_dict()), P.RGB_SEED))
    model.eval()
    frames = P.parity_array("bench", args.frames, 3)

    if args.check:
        check_batch_invariance(model, frames, args.device)
    print(f"machine: {machine(args.device)}; {args.videos} videos x {args.frames} frames "
          f"({frames.shape[0] / 10:.0f} s at 10 fps), soft-NMS workers: {args.workers}\n")
    print("| precision | batch | windows | wall s | frames/s | network frames/s | decode s | network s "
          "| soft-NMS s | det./video |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dtype in args.dtypes.split(","):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            r = run(model, frames, args.videos, batch, dtype, args.device, args.workers)
            print(f"| {dtype} | {batch} | {r['windows']} | {r['wall']:.2f} | {r['fps']:.0f} | {r['network_fps']:.0f} "
                  f"| {r['decode']:.2f} | {r['network']:.2f} | {r['postprocess']:.2f} | {r['detections']:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
