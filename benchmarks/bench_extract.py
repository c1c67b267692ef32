"""Speed of `afsd extract`: I3D clips per second, network alone and the whole path from a video.

    .venv/bin/python benchmarks/bench_extract.py [--threads 2] [--device cpu|cuda] [--amp off bf16]
                                                 [--sizes 224 112] [--batch-sizes 1 8] [--repeats 3] [--check]

Prints markdown tables. "network": median clips/s of ``repeats`` timed batches of 16-frame clips
after one warm-up (``ClipEncoder``: uint8 → x/255*2-1 → I3D to Mixed_5c → mean), random weights
(speed does not depend on them). "end to end": ``extract_features`` on a synthetic 30 fps MJPG
video (decode, Pillow bicubic resize, centre crop, network, atomic write) at the default batch size,
clips/s of wall time. "layout": the network alone with contiguous vs channels-last tensors.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from afsd_cli.features.extract import ExtractSettings, extract_features
from afsd_cli.features.network import ClipEncoder, default_batch_size
from afsd_cli.model.i3d import InceptionI3d


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def network_clips_per_second(size: int, batch: int, device: str, amp: str, repeats: int,
                             memory_format: torch.memory_format | None = None) -> float:
    encoder = ClipEncoder(InceptionI3d(3), device, amp)
    if memory_format is not None:  # override the encoder's choice, to compare layouts
        encoder.memory_format = memory_format
        encoder.model.to(memory_format=memory_format)
    clips = np.random.default_rng(0).integers(0, 256, (batch, 16, size, size, 3), dtype=np.uint8)
    times = []
    for attempt in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        encoder(clips)
        _sync(device)
        if attempt:  # the first batch warms allocators and kernels
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def device_agreement(size: int, device: str, amp: str) -> float:
    """Relative L2 distance between features on ``device``/``amp`` and float32 on the CPU."""
    torch.manual_seed(0)
    model = InceptionI3d(3).eval()
    clips = np.random.default_rng(1).integers(0, 256, (2, 16, size, size, 3), dtype=np.uint8)
    reference = ClipEncoder(model, "cpu", "off")(clips)
    features = ClipEncoder(model, device, amp)(clips)
    return float(np.linalg.norm(features - reference) / np.linalg.norm(reference))


def end_to_end_clips_per_second(size: int, batch: int | None, device: str, amp: str,
                                seconds: float) -> tuple[float, int]:
    import cv2

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        torch.save(InceptionI3d(3).state_dict(), folder / "weights.pt")
        frames = int(seconds * 30)
        side = round(size * 256 / 224)
        writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0,
                                 (side * 4 // 3, side))
        rng = np.random.default_rng(0)
        texture = rng.integers(0, 256, (side, side * 4 // 3 + frames, 3), dtype=np.uint8)
        for i in range(frames):
            writer.write(np.ascontiguousarray(texture[:, i:i + side * 4 // 3]))
        writer.release()
        settings = ExtractSettings(weights=str(folder / "weights.pt"), size=size, device=device, amp=amp,
                                   batch_size=batch)  # None: the default for this device and size
        start = time.perf_counter()
        report = extract_features([folder / "clip.avi"], folder / "out", settings)
        elapsed = time.perf_counter() - start
        clips = report.results[0].frames
        return clips / elapsed, clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", nargs="+", default=["off"], choices=["off", "bf16", "fp16"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--video-seconds", type=float, default=4.0)
    parser.add_argument("--layout-size", type=int, default=112, help="clip side of the memory-layout comparison")
    parser.add_argument("--layout-batch", type=int, default=4)
    parser.add_argument("--layout-rounds", type=int, default=6)
    parser.add_argument("--check", action="store_true", help="first compare --device/--amp features with CPU float32")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, device {args.device}")
    if args.check:
        print("\n| amp | clip | relative L2 vs CPU float32 |\n|---|---|---:|")
        for amp in args.amp:
            print(f"| {amp} | 16×{args.sizes[0]}² | {device_agreement(args.sizes[0], args.device, amp):.2e} |", flush=True)
    print("\n| threads | amp | clip | batch | network clips/s |\n|---:|---|---|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for amp in args.amp:
            for size in args.sizes:
                for batch in args.batch_sizes:
                    rate = network_clips_per_second(size, batch, args.device, amp, args.repeats)
                    print(f"| {threads} | {amp} | 16×{size}² | {batch} | {rate:.2f} |", flush=True)
    layout_rates: dict[str, list[float]] = {"contiguous": [], "channels-last": []}
    torch.set_num_threads(args.threads[0])
    for _ in range(args.layout_rounds):  # alternate, so that a change of load hits both layouts
        for name, layout in (("contiguous", torch.contiguous_format), ("channels-last", torch.channels_last_3d)):
            layout_rates[name].append(network_clips_per_second(args.layout_size, args.layout_batch, args.device, "off",
                                                               args.repeats, layout))
    if args.layout_rounds:
        print(f"\n| layout ({args.threads[0]} thread(s), 16×{args.layout_size}², batch {args.layout_batch}) "
              "| median clips/s | rounds |\n|---|---:|---|")
    for name, rates in layout_rates.items() if args.layout_rounds else ():
        print(f"| {name} | {statistics.median(rates):.2f} | {' '.join(f'{r:.2f}' for r in rates)} |", flush=True)
    print("\n| threads | amp | clip | batch | video | end-to-end clips/s |\n|---:|---|---|---:|---|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for amp in args.amp:
            for size in args.sizes:
                rate, clips = end_to_end_clips_per_second(size, None, args.device, amp, args.video_seconds)
                batch = default_batch_size(args.device)
                print(f"| {threads} | {amp} | 16×{size}² | {batch} (default) | {args.video_seconds:g} s at 30 fps, "
                      f"{clips} clips | {rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
