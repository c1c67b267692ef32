"""Effect of the two official post-processing quirks on mAP (a documented small experiment).

    PYTHONPATH=. python benchmarks/quirks_predict.py [--gt tests/data/evaluation/thumos_gt.json]
        [--info tests/data/video/thumos14_test_video_info.csv] [--seed 0] [--short]

No trained model is at hand, so raw outputs are *simulated* on the real THUMOS14 test videos
(their lengths and ground truth): for every test window (thumos14/test.py offsets) and each of the 126
pyramid locations, a location whose centre lies inside a ground-truth instance predicts that
instance's boundaries with Gaussian noise (σ = 15 % of its length) and its class with a score
U(0.05, 0.9); other locations predict a ~20-frame segment around themselves with one random
class at U(0, 0.05). The real post-processing (candidate threshold, seconds, per-class soft-NMS,
assembly) then runs with each switch on and off, and the official evaluation (our
``evaluate_detections``) scores the result at tIoU 0.3:0.7. ``--short`` keeps only the first 20 s
of every video (a short-video set: one zero-padded 256-frame window each), where segments can run past
the video's end.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from afsd_cli.data.annotations import read_video_info_csv, thumos14_class_index
from afsd_cli.data.windows import test_window_offsets
from afsd_cli.engine.postprocess import PostprocessSettings, VideoMeta, assemble_detections
from afsd_cli.evaluation.detection_map import evaluate_detections

LEVELS = (64, 32, 16, 8, 4, 2)
CENTRES = np.concatenate([(np.arange(t) + 0.5) / t * 256 for t in LEVELS]).astype(np.float32)


def simulate(rng, n_frames: int, instances: list[tuple[float, float, int]]):
    offsets = test_window_offsets(n_frames, 256, 128)
    W, K, C = len(offsets), len(CENTRES), 21
    segments = np.zeros((W, K, 2), np.float32)
    scores = np.zeros((W, K, C), np.float32)
    for w, offset in enumerate(offsets):
        frames = offset + CENTRES
        for k, f in enumerate(frames):
            hit = next(((s, e, c) for s, e, c in instances if s <= f <= e), None)
            if hit is not None:
                s, e, c = hit
                noise = rng.normal(0, 0.15 * (e - s), 2)
                segments[w, k] = (s + noise[0] - offset, e + noise[1] - offset)
                scores[w, k, c] = rng.uniform(0.05, 0.9)
            else:
                half = np.exp(rng.normal(np.log(10), 0.5))
                segments[w, k] = (CENTRES[k] - half, CENTRES[k] + half)
                scores[w, k, rng.integers(1, C)] = rng.uniform(0, 0.05)
    return offsets, np.clip(segments, 0, 256), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", default="tests/data/evaluation/thumos_gt.json")
    parser.add_argument("--info", default="tests/data/video/thumos14_test_video_info.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--short", action="store_true", help="cut every video to its first 20 s")
    args = parser.parse_args()

    gt = json.load(open(args.gt))
    infos = read_video_info_csv(args.info)
    names = thumos14_class_index().names
    class_id = {n: i + 1 for i, n in enumerate(names)}
    rng = np.random.default_rng(args.seed)
    videos = [v for v, e in gt["database"].items() if e["subset"] == "test" and v in infos]
    simulated = {}
    n_frames = {}
    for video in videos:
        info = infos[video]
        n = min(info.sample_count, 200) if args.short else info.sample_count
        duration = n / info.sample_fps if args.short else info.count / info.fps
        n_frames[video] = n
        inst = [(float(a["segment"][0]) * 10, min(float(a["segment"][1]) * 10, n), class_id[a["label"]])
                for a in gt["database"][video]["annotations"] if float(a["segment"][0]) * 10 < n - 5]
        simulated[video] = (simulate(rng, n, inst), VideoMeta(video, info.sample_fps, duration))
    if args.short:  # the ground truth of the cut videos: instances clipped to the kept part
        for video in videos:
            end = simulated[video][1].duration
            anns = gt["database"][video]["annotations"]
            gt["database"][video]["annotations"] = [
                {**a, "segment": [float(a["segment"][0]), min(float(a["segment"][1]), end)]}
                for a in anns if float(a["segment"][0]) * 10 < n_frames[video] - 5]

    print(f"{len(videos)} THUMOS14 test videos{' cut to 20 s' if args.short else ''}, seed {args.seed}\n")
    print("| softnms_emit_last | clip_to_video | detections | mAP@0.3 | 0.5 | 0.7 | avg mAP (0.3:0.7) | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for emit_last, clip in ((False, False), (True, False), (False, True), (True, True)):
        settings = PostprocessSettings(emit_last=emit_last, clip_to_video=clip)
        start = time.perf_counter()
        results = {v: assemble_detections(seg, sc, off, meta, settings, names)
                   for v, ((off, seg, sc), meta) in simulated.items()}
        seconds = time.perf_counter() - start
        ev = evaluate_detections(gt, {"version": "THUMOS14", "results": results, "external_data": {}},
                                 subset="test", dataset="thumos14")
        m = 100 * ev.mAP
        print(f"| {emit_last} | {clip} | {sum(map(len, results.values()))} | {m[0]:.3f} | {m[2]:.3f} | {m[4]:.3f} "
              f"| {100 * ev.average_mAP:.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
