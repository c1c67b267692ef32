"""Seconds per AFSD training step (forward, every loss term incl. the consistency pass, backward,
Adam step), for a small preset and the THUMOS14 configuration (256 x 96 x 96, 21 classes).

Synthetic inputs (random clip, three ground-truth segments, the boundary-consistency sample), so
data loading is not measured: this is the compute of one step as ``afsd train`` runs it
(``afsd_cli.engine.trainer.compute_losses`` + backward + optimiser). On CUDA it compares fp32
with bf16 / fp16 autocast side by side and reports the peak GPU memory.

Usage::

    python benchmarks/bench_train.py                       # CPU: small (5 steps) + thumos14 (2 steps)
    python benchmarks/bench_train.py --device cuda         # + fp32 / bf16 / fp16, 10 steps each
    python benchmarks/bench_train.py --presets small --steps 3
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afsd_cli.data.datasets import TrainingBatch, consistency_sample  # noqa: E402
from afsd_cli.data.windows import boundary_masks, normalised_targets  # noqa: E402
from afsd_cli.engine.losses import LossSettings, weighted_total  # noqa: E402
from afsd_cli.engine.trainer import compute_losses  # noqa: E402
from afsd_cli.model import AFSD, ModelSpec  # noqa: E402

PRESETS = {
    # name: (clip_length, crop, classes)
    "small": (64, 48, 3),
    "thumos14": (256, 96, 21),
}


def make_batch(clip_length: int, crop: int, classes: int, batch: int, seed: int = 0) -> TrainingBatch:
    import random

    rng = np.random.default_rng(seed)
    scale = clip_length / 256
    annotations = [(20 * scale, 60 * scale, 1), (100 * scale, 180 * scale, min(2, classes - 1)),
                   (200 * scale, 250 * scale, 1)]
    sample = consistency_sample(annotations, clip_length, max(1, round(20 * scale)), random.Random(1))
    clips = torch.from_numpy(rng.uniform(-1, 1, (batch, 3, clip_length, crop, crop)).astype(np.float32))
    targets = [torch.from_numpy(normalised_targets(annotations, clip_length)) for _ in range(batch)]
    scores = torch.from_numpy(np.stack([boundary_masks(annotations, clip_length)] * batch))
    index = [torch.from_numpy(sample.source_index) if sample else None] * batch
    proposals = [torch.from_numpy(sample.proposals) if sample else None] * batch
    return TrainingBatch(clips, targets, scores, index, proposals)


def time_steps(preset: str, device: torch.device, amp: str, steps: int, batch_size: int) -> dict:
    clip_length, crop, classes = PRESETS[preset]
    torch.manual_seed(0)
    model = AFSD(ModelSpec("thumos14", classes, clip_length, crop, 3)).to(device)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    settings = LossSettings.official("sliding", num_classes=classes, clip_length=clip_length)
    batch = make_batch(clip_length, crop, classes, batch_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, dropped = [], 0
    for step in range(steps + 1):  # the first step warms up (allocator, kernels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        terms = compute_losses(model, model, batch, settings, device, amp)
        total = weighted_total(terms, settings)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scale = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        # fp16: the scaler lowers its scale exactly when it dropped the step (inf/NaN gradients)
        dropped += int(scale is not None and scaler.get_scale() < scale)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"preset": preset, "shape": f"{clip_length}x{crop}x{crop}", "amp": amp, "batch": batch_size,
            "steps": steps, "seconds": seconds, "frames_per_second": batch_size * clip_length / seconds,
            "peak_gib": peak, "loss": float(total.detach()), "dropped": dropped}


def time_dataset(samples: int = 20) -> dict:
    """One THUMOS14 training sample (memory-mapped 112 px frames -> cropped, flipped, normalised
    256-frame clip + masks + consistency sample), as a DataLoader worker produces it."""
    import tempfile

    from afsd_cli.data.annotations import Annotation
    from afsd_cli.data.datasets import WindowDataset
    from afsd_cli.data.windows import TrainingWindow

    with tempfile.TemporaryDirectory() as folder:
        frames = np.random.default_rng(0).integers(0, 255, (1500, 112, 112, 3), dtype=np.uint8)
        np.save(Path(folder) / "video.npy", frames)
        del frames
        annotations = (Annotation(20.0, 60.0, 1), Annotation(100.0, 180.0, 2), Annotation(200.0, 250.0, 1))
        windows = [TrainingWindow("video", offset, annotations, 256, 20) for offset in range(0, 1200, 30)]
        dataset = WindowDataset(windows, folder, 256, 96)
        dataset[0]
        start = time.perf_counter()
        for index in range(samples):
            dataset[index % len(dataset)]
        seconds = (time.perf_counter() - start) / samples
    return {"seconds": seconds, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--presets", default="small,thumos14")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default: CPU 5/2, CUDA 10)")
    parser.add_argument("--amp", default=None, help="comma list of off,bf16,fp16 (default: CPU off; CUDA all)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amps = (args.amp or ("off,bf16,fp16" if device.type == "cuda" else "off")).split(",")
    rows = []
    for preset in args.presets.split(","):
        for amp in amps:
            steps = args.steps or (10 if device.type == "cuda" else (5 if preset == "small" else 2))
            rows.append(time_steps(preset, device, amp, steps, args.batch))
            print(f"done {preset} {amp}: {rows[-1]['seconds']:.3f} s/step", file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"\nTraining step, {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"batch {args.batch} (median of the timed steps after one warm-up)\n")
    memory = "peak GPU GiB" if device.type == "cuda" else "process peak RSS GiB"
    data = time_dataset()
    print(f"Data loading: {data['seconds'] * 1000:.1f} ms per THUMOS14 training sample in one process "
          f"(memory-mapped array, crop, flip, masks, consistency sample; mean of {data['samples']})\n")
    print(f"| preset | clip | amp | steps | s/step | frames/s | vs fp32 | {memory} | loss | steps dropped by the fp16 scaler |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        base = next((r for r in rows if r["preset"] == row["preset"] and r["amp"] == "off"), None)
        ratio = f"{base['seconds'] / row['seconds']:.2f}x" if base else "-"
        print(f"| {row['preset']} | {row['shape']} | {row['amp']} | {row['steps']} | {row['seconds']:.3f} | "
              f"{row['frames_per_second']:.1f} | {ratio} | {row['peak_gib']:.2f} | {row['loss']:.3f} | "
              f"{row['dropped'] if row['amp'] == 'fp16' else '-'} |")


if __name__ == "__main__":
    main()
