"""Peak memory and wall time of streaming `afsd predict --video` on long videos.

Makes synthetic long videos with OpenCV (a panning texture, MJPG, 10 fps so that every frame is
sampled and generation stays quick; ``--minutes 20 60`` by default), writes a randomly
initialised checkpoint of the demo preset's model (configs/demo.yaml sizes: 32-frame windows,
stride 16, 32 px crop, 5 classes; the weights do not matter for memory), then measures, each in
a fresh process under ``/usr/bin/time -v``:

* ``afsd predict --video`` (streaming) on every video: maximum resident set size, wall time and
  the command's own split (decoding in the background thread, network);
* the in-memory path (``video_file_jobs(streaming=False)``: decode the whole video, then the
  network) on the shortest video, for comparison;
* decoding alone (iterating the frame stream, no network) on the shortest video.

``--overlap`` measures instead whether decoding overlaps the network, on a video whose decoding
is expensive (960x540 mp4v): decoding alone, the network alone, decode-then-network (the
in-memory path) and streaming.

Prints markdown tables (copy them to benchmarks/results_stream.md).
Usage: ``python benchmarks/bench_stream.py [--minutes 20 60] [--size 160x120] [--keep DIR]``,
``python benchmarks/bench_stream.py --overlap [--overlap-size 960x540] [--overlap-minutes 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FPS = 10.0
CONFIG = """dataset:
  name: thumos14
  num_classes: 5
  training:
    clip_length: 32
    crop_size: 32
  testing:
    crop_size: 32
    clip_length: 32
    clip_stride: 16
model:
  in_channels: 3
testing:
  conf_thresh: 0.01
  top_k: 5000
  output_path: {out}
"""
CLASSES = "1 Bounce\n2 Slide\n3 Spin\n4 Grow\n"


def make_video(path: Path, minutes: float, size: tuple[int, int], fourcc: str = "MJPG") -> Path:
    """A texture panning one pixel per frame (10 fps)."""
    import cv2

    width, height = size
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.float32),
                      (width * 2, height), interpolation=cv2.INTER_CUBIC)
    base = np.clip(base, 0, 255).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, size)
    for index in range(int(minutes * 60 * FPS)):
        shift = index % width
        frame = base[:, shift:shift + width]
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return path


def make_checkpoint(folder: Path) -> tuple[Path, Path]:
    import torch

    from afsd_cli.io import save_torch
    from afsd_cli.model import AFSD, ModelSpec

    torch.manual_seed(0)
    model = AFSD(ModelSpec(dataset="thumos14", num_classes=5, clip_length=32, crop_size=32, in_channels=3))
    checkpoint = folder / "random.ckpt"
    save_torch(checkpoint, model.state_dict())
    (folder / "classes.txt").write_text(CLASSES)
    config = folder / "bench.yaml"
    config.write_text(CONFIG.format(out=folder / "out").replace(
        "  num_classes: 5\n", f"  num_classes: 5\n  class_index_path: {folder / 'classes.txt'}\n"))
    return config, checkpoint


def timed(command: list[str], extensions: Path) -> dict:
    """Run ``command`` under /usr/bin/time -v: max RSS (MiB), wall (s), its stdout+stderr.

    ``extensions``: a private, pre-built $TORCH_EXTENSIONS_DIR. /usr/bin/time reports the largest
    of the process and its children, and a first use of the boundary-pooling op compiles it: the
    compiler (~800 MB) would be measured instead of the command."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200", TORCH_EXTENSIONS_DIR=str(extensions))
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return {"rss_mib": rss_kib / 1024, "wall": wall, "text": done.stdout + done.stderr}


def stage_times(text: str) -> tuple[float, float]:
    found = re.search(r"loading/decoding ([\d.]+) s.*?network ([\d.]+) s", text, re.S)
    return (float(found.group(1)), float(found.group(2))) if found else (float("nan"), float("nan"))


def in_memory_main(config: str, checkpoint: str, video: str, output: str) -> None:
    """The in-memory path (decode the whole video, then the network), for the comparison."""
    from afsd_cli.config import load_config
    from afsd_cli.engine.jobs import video_file_jobs
    from afsd_cli.engine.planning import plan_prediction

    cfg = load_config(config, [])
    plan = plan_prediction(cfg, [checkpoint], videos=[video], device="cpu", batch_size=8)
    jobs = video_file_jobs([video], "thumos14", plan.channels, streaming=False)
    [result] = plan.predictor.run(jobs)
    Path(output).write_text(json.dumps(result.detections))
    print(f"time by stage: loading/decoding {result.timings['decode']:.1f} s, network {result.timings['network']:.1f} s")


def decode_only_main(video: str) -> None:
    from afsd_cli.data.frame_stream import VideoFrameStream

    stream = VideoFrameStream(video)
    for _ in stream:
        pass
    print(f"decoded {stream.frames_read} frames")


def overlap(folder: Path, args: argparse.Namespace) -> None:
    """Wall time of streaming vs decoding the whole video first, with decoding alone and the
    network alone (the in-memory run's network time) beside them."""
    python = sys.executable
    config, checkpoint = make_checkpoint(folder)
    size = tuple(int(v) for v in args.overlap_size.split("x"))
    video = folder / f"overlap_{args.overlap_size}.mp4"
    if not video.exists():
        make_video(video, args.overlap_minutes, size, fourcc="mp4v")
    extensions = folder / "torch_extensions"
    timed([python, "-c", "from afsd_cli.ops.extension import load_extension as l; assert l().cpu"], extensions)
    decode_run = timed([python, __file__, "_decode_only", str(video)], extensions)
    memory_run = timed([python, __file__, "_in_memory", str(config), str(checkpoint), str(video),
                        str(folder / "overlap_memory.json")], extensions)
    stream_run = timed([python, "-m", "afsd_cli", "predict", str(config), "--checkpoint", str(checkpoint), "--video", str(video),
                        "-o", str(folder / "overlap_stream.json"), "--device", "cpu", "--batch-size", str(args.batch_size)],
                       extensions)
    _, network = stage_times(memory_run["text"])
    print(f"{args.overlap_minutes:g} min of {args.overlap_size} mp4v at 10 fps, batch {args.batch_size}:\n")
    print("| run | wall | max RSS |")
    print("|---|---:|---:|")
    print(f"| decoding alone (frame stream, no network) | {decode_run['wall']:.0f} s | {decode_run['rss_mib']:.0f} MiB |")
    print(f"| network alone (the in-memory run's network time) | {network:.0f} s | |")
    print(f"| in memory: decode everything, then the network | {memory_run['wall']:.0f} s | {memory_run['rss_mib']:.0f} MiB |")
    print(f"| streaming `afsd predict --video` | {stream_run['wall']:.0f} s | {stream_run['rss_mib']:.0f} MiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[20.0, 60.0])
    parser.add_argument("--size", default="160x120", help="frame size of the synthetic videos (WxH)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="keep the videos and outputs in this folder")
    parser.add_argument("--overlap", action="store_true",
                        help="instead: the overlap of decoding and network on a video whose decoding is "
                             "expensive (--overlap-size, mp4v), streaming vs decode-then-network")
    parser.add_argument("--overlap-size", default="960x540")
    parser.add_argument("--overlap-minutes", type=float, default=3.0)
    args = parser.parse_args()
    if not Path("/usr/bin/time").is_file():
        raise SystemExit("bench_stream.py measures peak memory with GNU time: install /usr/bin/time (package 'time')")
    size = tuple(int(v) for v in args.size.split("x"))
    folder = Path(args.keep or tempfile.mkdtemp(prefix="afsd-bench-stream-"))
    folder.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    if args.overlap:
        try:
            overlap(folder, args)
        finally:
            if args.keep is None:
                shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        config, checkpoint = make_checkpoint(folder)
        videos = {}
        for minutes in args.minutes:
            path = folder / f"synthetic_{minutes:g}min.avi"
            if not path.exists():
                t0 = time.perf_counter()
                make_video(path, minutes, size)
                print(f"made {path.name} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr)
            videos[minutes] = path

        extensions = folder / "torch_extensions"
        build = timed([python, "-c", "from afsd_cli.ops.extension import load_extension as l; assert l().cpu"],
                      extensions)
        print(f"boundary-pooling op ready in {build['wall']:.0f} s", file=sys.stderr)

        rows = []
        for minutes, path in videos.items():
            out = folder / f"stream_{minutes:g}.json"
            run = timed([python, "-m", "afsd_cli", "predict", str(config), "--checkpoint", str(checkpoint), "--video", str(path),
                         "-o", str(out), "--device", "cpu", "--batch-size", str(args.batch_size)], extensions)
            decode, network = stage_times(run["text"])
            rows.append(("streaming", minutes, run["rss_mib"], run["wall"], decode, network, out))
            print(f"streaming {minutes:g} min: {run['rss_mib']:.0f} MiB, {run['wall']:.0f} s", file=sys.stderr)

        shortest = min(videos)
        out = folder / f"memory_{shortest:g}.json"
        run = timed([python, __file__, "_in_memory", str(config), str(checkpoint), str(videos[shortest]), str(out)],
                    extensions)
        decode, network = stage_times(run["text"])
        rows.append(("in memory", shortest, run["rss_mib"], run["wall"], decode, network, out))
        decode_run = timed([python, __file__, "_decode_only", str(videos[shortest])], extensions)

        frames_mib = {m: m * 60 * FPS * 112 * 112 * 3 / 2**20 for m in videos}
        print("| path | video | sampled frames | frames as uint8 | max RSS | wall | decoding | network |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for path_kind, minutes, rss, wall, decode, network, _ in rows:
            print(f"| {path_kind} | {minutes:g} min | {int(minutes * 600)} | {frames_mib[minutes]:.0f} MiB | "
                  f"{rss:.0f} MiB | {wall:.0f} s | {decode:.0f} s | {network:.0f} s |")
        streaming = {m: r for k, m, r, *_ in rows if k == "streaming"}
        if len(streaming) > 1:
            low, high = min(streaming), max(streaming)
            print(f"\npeak memory {high:g} min / {low:g} min (streaming): {streaming[high] / streaming[low]:.3f}")
        print(f"decoding alone ({shortest:g} min, separate process): {decode_run['wall']:.0f} s wall, "
              f"{decode_run['rss_mib']:.0f} MiB")
        same = json.loads(rows[-1][-1].read_text()) == json.loads(
            (folder / f"stream_{shortest:g}.json").read_text())["results"][videos[shortest].stem]
        print(f"streaming detections == in-memory detections ({shortest:g} min): {same}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_in_memory":
        in_memory_main(*sys.argv[2:6])
    elif len(sys.argv) > 1 and sys.argv[1] == "_decode_only":
        decode_only_main(sys.argv[2])
    else:
        main()
