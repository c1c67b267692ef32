"""`afsd prepare` throughput against plain sequential decoding of the same file (the decode limit).

Makes textured, moving test clips with OpenCV (mp4v .mp4 and MJPG .avi; with ``--h264`` also an
H.264 .mp4 if an ``ffmpeg`` binary is on PATH), then measures side by side, best of ``--repeat``:

* decode limit: ``cv2.VideoCapture.read()`` of every frame, nothing else;
  (single-threaded FFmpeg decoding everywhere, as in the parallel workers: a per-core comparison)
* our per-video path (``read_video``: decode, 10 fps / ≤768 selection, 112x112 resize) and
  ``prepare_one`` (the same plus the atomic ``.npy`` write), in native frames per second;
* the resize options against the official PIL bicubic (speed and pixel difference), including
  Pillow itself and our native kernel that reproduces it;
* the whole batch (``prepare_videos``) with 1 and 2 worker processes over copies of a clip.

Prints markdown tables. Usage: ``python benchmarks/bench_data.py [--frames 900] [--size 320x240]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afsd_cli.data.pipeline import prepare_one, prepare_videos  # noqa: E402
from afsd_cli.data.video import read_video  # noqa: E402


def make_clip(path: Path, frames: int, size: tuple[int, int], fourcc: str, fps: float = 30.0) -> Path:
    """Smooth random texture panning diagonally, with a little noise (so codecs do real work)."""
    import cv2

    width, height = size
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height // 8 + 4, width // 8 + 4, 3)).astype(np.float32)
    texture = cv2.resize(base, (width * 2, height * 2), interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    for i in range(frames):
        x, y = (2 * i) % width, i % height
        frame = np.clip(texture[y : y + height, x : x + width] + rng.normal(0, 4, (height, width, 3)), 0, 255)
        writer.write(frame.astype(np.uint8))
    writer.release()
    return path


def make_h264(source: Path, target: Path) -> Path | None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    subprocess.run([ffmpeg, "-v", "quiet", "-y", "-i", str(source), "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(target)], check=True)
    return target


def best_of(repeat: int, func) -> tuple[float, float]:
    """Best (wall seconds, CPU seconds of this process, all its threads) over ``repeat`` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        func()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return min(walls), min(cpus)


def decode_all(path: Path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    count = 0
    while True:
        ok, _ = capture.read()
        if not ok:
            break
        count += 1
    capture.release()
    return count


def bench_file(path: Path, repeat: int, scratch: Path):
    """Rows (what, wall s, CPU s) for one clip, and the decode limit's (wall, CPU)."""
    rows = [("decode limit: cv2 read() every frame", *best_of(repeat, lambda: decode_all(path)))]
    for mode in ("thumos14", "anet"):
        for resize in ("pil-bicubic", "cv2-area"):
            rows.append((f"read_video {mode}, {resize}", *best_of(repeat, lambda: read_video(path, mode, resize=resize, decode_threads=1))))
    target = scratch / "out.npy"
    rows.append(("prepare_one thumos14, pil-bicubic (+ .npy write)",
                 *best_of(repeat, lambda: prepare_one(str(path), str(target), "thumos14", "pil-bicubic", True,
                                                          decode_threads=1))))
    rows.append(("prepare_one thumos14, cv2-area (+ .npy write)",
                 *best_of(repeat, lambda: prepare_one(str(path), str(target), "thumos14", "cv2-area", True,
                                                          decode_threads=1))))
    return rows, rows[0][1:]


def resize_table(path: Path, repeat: int) -> list[tuple[str, float, float, float, float]]:
    """Per resize option: (name, mean abs diff, max abs diff, % off by > 2, CPU ms per frame).

    Timed on the native-size BGR frames the 10 fps rule keeps, the way ``read_video`` calls them.
    """
    import cv2

    from afsd_cli.ops.bicubic_resize import BicubicResizer
    from afsd_cli.data.video import make_resizer

    frames, capture, index = [], cv2.VideoCapture(str(path)), 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % 3 == 2:
            frames.append(frame)
        index += 1
    capture.release()
    from afsd_cli.ops.bicubic_resize import native_state

    native = BicubicResizer(112, 112, reverse_channels=True, backend="native")
    library = native_state().library
    resizers = [  # (name, resize, SIMD path allowed)
        ("pil-bicubic, native kernel (default)", native, True),
        ("pil-bicubic, native kernel, portable loops (no AVX2)", native, False),
        ("pil-bicubic, Pillow", BicubicResizer(112, 112, reverse_channels=True, backend="pillow"), True),
        ("cv2-area", make_resizer("cv2-area"), True),
        ("cv2-cubic", make_resizer("cv2-cubic"), True),
    ]
    reference = np.stack([resizers[2][1](f) for f in frames]).astype(np.int16)
    rows = []
    for name, resize, simd in resizers:
        library.afsd_resize_simd(int(simd))
        _, cpu = best_of(repeat, lambda: [resize(f) for f in frames])
        diff = np.abs(np.stack([resize(f) for f in frames]).astype(np.int16) - reference)
        rows.append((name, float(diff.mean()), float(diff.max()), float((diff > 2).mean() * 100),
                     cpu / len(frames) * 1e3))
    library.afsd_resize_simd(1)
    return rows


def bench_batch(path: Path, copies: int, jobs_list: list[int], scratch: Path) -> list[tuple[int, float, float]]:
    videos = scratch / "batch_videos"
    videos.mkdir(exist_ok=True)
    for i in range(copies):
        shutil.copy(path, videos / f"v{i:02d}{path.suffix}")
    count = decode_all(path) * copies
    rows = []
    for jobs in jobs_list:
        out = scratch / f"batch_out_{jobs}"
        start = time.perf_counter()
        report = prepare_videos(videos, out, jobs=jobs, overwrite=True)
        seconds = time.perf_counter() - start
        assert report.ok, [r.error for r in report.failures]
        rows.append((jobs, seconds, count / seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=900, help="native frames per clip (30 fps)")
    parser.add_argument("--size", default="320x240", help="native WIDTHxHEIGHT")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=int, default=6, help="clips in the batch run")
    parser.add_argument("--h264", action="store_true", help="also an H.264 clip (needs ffmpeg on PATH)")
    parser.add_argument("--jobs", default="1,2", help="comma-separated worker counts for the batch run")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    import cv2
    import PIL

    print(f"# bench_data: {args.frames} frames {width}x{height} @30 fps, best of {args.repeat}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, OpenCV {cv2.__version__}, Pillow {PIL.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    from afsd_cli.ops.bicubic_resize import active_backend

    print(f"pil-bicubic resize backend: {': '.join(active_backend())}\n")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        clips = {
            "mp4v .mp4": make_clip(scratch / "clip.mp4", args.frames, (width, height), "mp4v"),
            "MJPG .avi": make_clip(scratch / "clip.avi", args.frames, (width, height), "MJPG"),
        }
        if args.h264:
            h264 = make_h264(clips["mp4v .mp4"], scratch / "clip_h264.mp4")
            if h264 is not None:
                clips["H.264 .mp4"] = h264
            else:
                print("(no ffmpeg on PATH: H.264 clip skipped)\n")

        print("## One process, one video (native frames per second)\n")
        print("frames/s per core = native frames / CPU seconds of the process (all threads); the ratio is")
        print("that throughput over the decode limit's (1.00 = as fast as decoding alone).\n")
        print("| clip | what | wall s | CPU s | frames/s per core | vs decode limit (CPU) | vs decode limit (wall) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for label, path in clips.items():
            count = decode_all(path)
            rows, (limit_wall, limit_cpu) = bench_file(path, args.repeat, scratch)
            for what, wall, cpu in rows:
                print(f"| {label} | {what} | {wall:.3f} | {cpu:.3f} | {count / cpu:,.0f} | {limit_cpu / cpu:.2f} "
                      f"| {limit_wall / wall:.2f} |")

        print(f"\n## Resize options against the official PIL bicubic (mp4v clip, THUMOS14-kept {width}x{height} frames)\n")
        print("| resize | mean abs diff | max abs diff | % values off by > 2 | CPU ms per frame |")
        print("|---|---:|---:|---:|---:|")
        for method, mean, peak, share, ms in resize_table(clips["mp4v .mp4"], args.repeat):
            print(f"| {method} | {mean:.2f} | {peak:.0f} | {share:.2f} | {ms:.3f} |")

        print(f"\n## Batch `prepare_videos` over {args.copies} copies of the mp4v clip (THUMOS14, PIL)\n")
        print("wall clock, so it depends on what else runs on the machine.\n")
        print("| jobs | seconds | native frames/s | frames/s per job |")
        print("|---:|---:|---:|---:|")
        for jobs, seconds, fps in bench_batch(clips["mp4v .mp4"], args.copies,
                                            [int(j) for j in args.jobs.split(",")], scratch):
            print(f"| {jobs} | {seconds:.2f} | {fps:,.0f} | {fps / jobs:,.0f} |")


if __name__ == "__main__":
    main()
