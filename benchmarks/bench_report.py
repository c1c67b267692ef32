"""Size and writing time of the HTML evaluation report (`afsd evaluate --report`).

THUMOS14-sized input: the real THUMOS14 test annotations (212 videos, 3358 instances) and
synthetic detections of the size AFSD writes (~235 per video, ~50,000 in all: a third near an
instance, 85 % of those with its class, the rest anywhere with lower scores). One run alone and
two runs compared (the `--compare` page).

    python benchmarks/bench_report.py [--detections 50000] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from afsd_cli.evaluation import detections_from_dict, evaluate_detections, load_ground_truth
from afsd_cli.evaluation.report import ReportRun, write_report

GT = Path(__file__).resolve().parents[1] / "tests" / "data" / "evaluation" / "thumos14_test_Annotation.csv"


def synthetic_detections(ground_truth, total: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    per_video = total // len(ground_truth.videos)
    n_classes = len(ground_truth.class_names)
    results = {}
    for v, name in enumerate(ground_truth.videos):
        own = np.flatnonzero(ground_truth.video_index == v)
        near = min(per_video // 3, own.size * 4)
        pick = rng.choice(own, near)
        length = ground_truth.ends[pick] - ground_truth.starts[pick]
        centre = (ground_truth.starts[pick] + ground_truth.ends[pick]) / 2 + rng.normal(0, 0.15, near) * length
        half = length * rng.uniform(0.35, 0.75, near)
        far = per_video - near
        anywhere = rng.random(far) * ground_truth.ends[own].max() * 1.1
        starts = np.concatenate([np.maximum(centre - half, 0), anywhere])
        ends = np.concatenate([centre + half, anywhere + rng.random(far) * 10])
        right = rng.random(near) < 0.85
        labels = np.concatenate([np.where(right, ground_truth.label_index[pick], rng.integers(0, n_classes, near)),
                                 rng.integers(0, n_classes, far)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, near), rng.uniform(0.0, 0.6, far)])
        results[name] = [{"segment": [float(s), float(e)], "score": float(x), "label": ground_truth.class_names[c]}
                         for s, e, x, c in zip(starts, ends, scores, labels)]
    return {"results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ground_truth = load_ground_truth(GT)
    runs = []
    for seed, name in ((args.seed, "A"), (args.seed + 1, "B")):
        detections = detections_from_dict(synthetic_detections(ground_truth, args.detections, seed))
        runs.append(ReportRun(name, detections, evaluate_detections(ground_truth, detections)))
    print(f"{len(ground_truth.videos)} videos, {ground_truth.starts.size} instances, "
          f"{len(runs[0].detections)} detections per run")
    print("| page | size | time to write |\n|---|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for label, page_runs in (("one run", runs[:1]), ("two runs compared", runs)):
            start = time.perf_counter()
            page = write_report(Path(folder) / "report.html", ground_truth, page_runs)
            seconds = time.perf_counter() - start
            print(f"| {label} | {page.stat().st_size / 1e6:.2f} MB | {seconds:.2f} s |")


if __name__ == "__main__":
    main()
