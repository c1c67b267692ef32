"""Benchmark `afsd evaluate`: the vectorised mAP against a plain per-detection loop.

Input: the THUMOS14 test ground truth (tests/data/evaluation/thumos_gt.json) and 200 synthetic
detections per video per class present in that video (jittered instances and random segments,
fixed seed). Both implementations run side by side in this process and must give identical
numbers (every detection's true/false positive at every threshold); then the whole
`afsd evaluate` command is timed as a fresh process (interpreter start, imports, JSON reading
and validation, evaluation, table and output file). Wall and CPU time are both reported: on a
shared machine the CPU time is the steadier one.

    .venv/bin/python benchmarks/bench_evaluate.py [--repeat 3] [--default-malloc]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from afsd_cli.evaluation import detections_from_dict, evaluate_detections, ground_truth_from_dict  # noqa: E402
from afsd_cli.evaluation._malloc import retain_freed_memory  # noqa: E402
from helpers.reference_map import reference_evaluate  # noqa: E402

GT_PATH = ROOT / "tests" / "data" / "evaluation" / "thumos_gt.json"
PER_VIDEO_CLASS = 200
SEED = 2021


def make_detections(gt_data: dict, per_video_class: int = PER_VIDEO_CLASS, seed: int = SEED) -> dict:
    rng = random.Random(seed)
    results = {}
    for video, entry in gt_data["database"].items():
        if entry["subset"] != "test":
            continue
        by_class: dict[str, list[tuple[float, float]]] = {}
        for ann in entry["annotations"]:
            by_class.setdefault(ann["label"], []).append((float(ann["segment"][0]), float(ann["segment"][1])))
        horizon = max(e for segs in by_class.values() for _, e in segs) * 1.05
        items = []
        for label, segments in by_class.items():
            for k in range(per_video_class):
                if k % 2 == 0:  # around an instance: a true positive at some thresholds
                    s, e = segments[rng.randrange(len(segments))]
                    length = e - s
                    centre = (s + e) / 2 + rng.uniform(-0.4, 0.4) * length
                    half = length * rng.uniform(0.3, 0.8)
                else:  # anywhere in the video
                    centre, half = rng.uniform(0, horizon), rng.uniform(0.5, 15.0)
                start = max(0.0, centre - half)
                items.append({"label": label, "score": rng.random(), "segment": [start, max(start, centre + half)]})
        results[video] = items
    return {"version": "bench", "results": results, "external_data": {}}


def best_of(repeat: int, func):
    """Best wall and best CPU time over ``repeat`` runs (CPU time is robust to a busy machine)."""
    walls, cpus, value = [], [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        value = func()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return min(walls), min(cpus), value


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the loop (4x as many of the rest)")
    parser.add_argument(
        "--default-malloc", action="store_true", help="keep glibc's malloc defaults (see afsd_cli/evaluation/_malloc.py)"
    )
    args = parser.parse_args()
    # As `afsd evaluate` does for its process; applies to both implementations alike.
    malloc_tuned = False if args.default_malloc else retain_freed_memory()

    gt_data = json.loads(GT_PATH.read_text())
    det_data = make_detections(gt_data)
    n_det = sum(len(v) for v in det_data["results"].values())
    gt = ground_truth_from_dict(gt_data, "test")
    dets = detections_from_dict(det_data)
    thresholds = [0.3, 0.4, 0.5, 0.6, 0.7]

    # Best of several consecutive runs each (as timeit does); the loop is slow, so fewer runs.
    t_vec, c_vec, ours = best_of(4 * args.repeat, lambda: evaluate_detections(gt, dets, thresholds))
    t_loop, c_loop, ref = best_of(args.repeat, lambda: reference_evaluate(gt_data, det_data, "test", thresholds))
    diff = float(np.abs(ours.ap - ref["ap"]).max())
    assert list(ours.class_names) == ref["class_names"], "class order differs"
    assert diff <= 1e-12, f"numbers differ: {diff}"
    for c, name in enumerate(ours.class_names):
        assert np.array_equal(ours.matches.of_class(c)[1], ref["tp"][name]), f"TP/FP differ for {name}"
    t_load, c_load, _ = best_of(
        4 * args.repeat, lambda: (ground_truth_from_dict(gt_data, "test"), detections_from_dict(det_data))
    )

    with tempfile.TemporaryDirectory() as tmp:
        det_path = Path(tmp) / "detections.json"
        det_path.write_text(json.dumps(det_data))
        afsd = Path(sys.executable).with_name("afsd")
        command = [str(afsd)] if afsd.exists() else [sys.executable, "-m", "afsd_cli"]
        command += ["evaluate", str(det_path), "--gt", str(GT_PATH), "--output", str(Path(tmp) / "m.json")]
        walls, cpus = [], []
        for _ in range(args.repeat):
            start, cpu = time.perf_counter(), child_cpu()
            subprocess.run(command, check=True, capture_output=True, env={**os.environ, "COLUMNS": "120"})
            walls.append(time.perf_counter() - start)
            cpus.append(child_cpu() - cpu)
        written = json.loads((Path(tmp) / "m.json").read_text())
        assert abs(written["average_mAP"] - ours.average_mAP) <= 1e-12
        size_mb = det_path.stat().st_size / 1e6

    load = os.getloadavg()[0]
    print(f"THUMOS14 test: {len(gt)} instances, {n_det} detections ({size_mb:.1f} MB JSON), tIoU {thresholds}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, "
        f"Python {platform.python_version()}, NumPy {np.__version__}, glibc malloc tuned: {malloc_tuned}; "
        f"best of {args.repeat} (loop) / {4 * args.repeat}"
    )
    print()
    print("| step | wall (s) | CPU (s) | speed-up (wall / CPU) | average mAP |")
    print("|---|---:|---:|---:|---:|")
    print(f"| mAP, per-detection loop (tests/helpers/reference_map.py) | {t_loop:.3f} | {c_loop:.3f} | 1x / 1x "
          f"| {ref['average_mAP']:.6f} |")
    print(f"| mAP, vectorised `evaluate_detections` | {t_vec:.3f} | {c_vec:.3f} | {t_loop / t_vec:.1f}x / "
          f"{c_loop / c_vec:.1f}x | {ours.average_mAP:.6f} |")
    print(f"| validating the loaded JSON (`*_from_dict`) | {t_load:.3f} | {c_load:.3f} | | |")
    print(f"| whole `afsd evaluate` command (new process) | {min(walls):.3f} | {min(cpus):.3f} | "
          f"| {written['average_mAP']:.6f} |")
    print()
    print(f"identical true/false positives; max |AP difference| = {diff:.1e}")


if __name__ == "__main__":
    main()
