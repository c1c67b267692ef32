"""Test helpers for evaluation: a plain per-detection loop implementation of the official
ActivityNet mAP (the reference the vectorised code is checked against), a deterministic
synthetic-detection generator, and a fingerprint of NumPy's argsort tie order.

Deliberately simple and independent of ``afsd_cli.evaluation``: it works on the raw JSON
objects and only shares the algorithm's definition.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import numpy as np


def reference_evaluate(gt_data: dict, det_data: dict, subset: str, thresholds, tie_break: str = "official") -> dict:
    """Loop over detections one by one, exactly as the official evaluator's algorithm reads."""
    thresholds = [float(t) for t in thresholds]
    classes: dict[str, int] = {}
    gt_rows: dict[tuple[int, str], list[tuple[float, float, int]]] = {}  # (class, video) -> rows
    n_gt_class: dict[int, int] = {}
    annotated_videos = set()
    for video, entry in gt_data["database"].items():
        if entry["subset"] != subset:
            continue
        for ann in entry["annotations"]:
            c = classes.setdefault(ann["label"], len(classes))
            rows = gt_rows.setdefault((c, video), [])
            rows.append((float(ann["segment"][0]), float(ann["segment"][1]), n_gt_class.get(c, 0)))
            n_gt_class[c] = n_gt_class.get(c, 0) + 1
            annotated_videos.add(video)

    per_class: dict[int, list[tuple[str, float, float, float]]] = {c: [] for c in classes.values()}
    for video, items in det_data["results"].items():
        if video not in annotated_videos:
            continue
        for item in items:
            if item["label"] not in classes:
                continue
            s, e = item["segment"]
            per_class[classes[item["label"]]].append((video, float(s), float(e), float(item["score"])))

    ap = np.zeros((len(thresholds), len(classes)))
    tp_flags: dict[int, np.ndarray] = {}
    for c, preds in per_class.items():
        if not preds:
            continue
        scores = np.array([p[3] for p in preds])
        order = np.argsort(scores)[::-1] if tie_break == "official" else np.argsort(-scores, kind="stable")
        locked = np.full((len(thresholds), n_gt_class[c]), False)
        tp = np.zeros((len(thresholds), len(preds)), dtype=bool)
        for rank, i in enumerate(order):
            video, ps, pe, _ = preds[i]
            rows = gt_rows.get((c, video))
            if not rows:
                continue  # false positive at every threshold
            tiou = np.empty(len(rows))
            for j, (gs, ge, _) in enumerate(rows):
                inter = max(0.0, min(pe, ge) - max(ps, gs))
                union = (ge - gs) + (pe - ps) - inter
                tiou[j] = inter / union if union != 0 else float("nan")
            if tie_break == "official":
                visit = np.argsort(tiou)[::-1]
            else:
                visit = np.argsort(np.where(np.isnan(tiou), -np.inf, -tiou), kind="stable")
            for t, thr in enumerate(thresholds):
                for j in visit:
                    if tiou[j] < thr:
                        break
                    g = rows[j][2]
                    if locked[t, g]:
                        continue
                    locked[t, g] = True
                    tp[t, rank] = True
                    break
        tp_flags[c] = tp
        for t in range(len(thresholds)):
            ap[t, c] = _interpolated_ap_loop(tp[t], n_gt_class[c])
    mAP = ap.mean(axis=1)
    names = list(classes)
    return {
        "ap": ap,
        "mAP": mAP,
        "average_mAP": float(mAP.mean()),
        "class_names": names,
        "tp": {names[c]: tp for c, tp in tp_flags.items()},
    }


def _interpolated_ap_loop(tp_row: np.ndarray, npos: int) -> float:
    precision, recall, hits = [], [], 0
    for k, hit in enumerate(tp_row, start=1):
        hits += int(hit)
        precision.append(hits / k)
        recall.append(hits / npos)
    mprec = [0.0] + precision + [0.0]
    mrec = [0.0] + recall + [1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return float(sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]))


def synthesize_detections(gt_data: dict, subset: str, seed: int, ties: bool = True) -> dict:
    """Deterministic detections around the ground truth of ``subset``.

    Jittered copies of instances, random false positives (right and wrong class), and extras
    for unknown videos and labels. ``ties=True`` adds what makes ordering matter: scores rounded
    to 2 decimals, exact duplicates, segments on a 0.1 s grid, zero-length segments.
    Only ``random.Random.random`` is used, whose sequence Python guarantees across versions.
    """
    rng = random.Random(seed)
    r = rng.random
    videos = [(v, e) for v, e in gt_data["database"].items() if e["subset"] == subset]
    labels = sorted({a["label"] for _, e in videos for a in e["annotations"]})

    def score() -> float:
        return round(r(), 2) if ties else r()

    def segment(start: float, end: float) -> list[float]:
        start = max(0.0, start)
        end = max(start, end)
        if ties and r() < 0.5:
            start, end = round(start, 1), round(end, 1)
        return [start, end]

    results: dict[str, list[dict[str, Any]]] = {}
    for video, entry in videos:
        items: list[dict[str, Any]] = []
        horizon = max([float(a["segment"][1]) for a in entry["annotations"]] + [10.0]) * 1.1
        for ann in entry["annotations"]:
            s, e = float(ann["segment"][0]), float(ann["segment"][1])
            length = max(e - s, 0.1)
            for _ in range(int(r() * 4)):
                centre = (s + e) / 2 + (r() - 0.5) * 0.6 * length
                half = length * (0.6 + 0.8 * r()) / 2
                items.append({"label": ann["label"], "score": score(), "segment": segment(centre - half, centre + half)})
        for _ in range(int(r() * 6)):
            start = r() * horizon
            label = labels[int(r() * len(labels))]
            items.append({"label": label, "score": score(), "segment": segment(start, start + r() * horizon * 0.2)})
        if ties and items and r() < 0.3:
            items.append(dict(items[int(r() * len(items))]))  # exact duplicate detection
        if ties and r() < 0.1:
            start = round(r() * horizon, 1)
            items.append({"label": labels[int(r() * len(labels))], "score": score(), "segment": [start, start]})
        order = sorted(range(len(items)), key=lambda _: r())  # file order unrelated to score
        results[video] = [items[i] for i in order]
    for k in range(3):
        results[f"unknown_video_{k}"] = [{"label": labels[0], "score": score(), "segment": [1.0, 2.0 + k]}]
    some_video = videos[len(videos) // 2][0]
    results[some_video] = results[some_video] + [
        {"label": "NotAClass", "score": score(), "segment": [0.0, 5.0]},
        {"label": "AlsoNotAClass", "score": 0.5, "segment": [1.0, 3.0]},
    ]
    return {"version": "synthetic", "results": results, "external_data": {}}


def canonical_sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def argsort_fingerprint() -> str:
    """Identifies the order NumPy's default argsort gives equal values on this build and CPU."""
    parts = []
    for n in (8, 16, 17, 40, 300, 5000):
        values = (np.arange(n) * 7919 % 11).astype(np.float64) / 10.0
        parts.append(np.argsort(values).astype(np.int64).tobytes())
    return hashlib.sha256(b"".join(parts)).hexdigest()[:16]
