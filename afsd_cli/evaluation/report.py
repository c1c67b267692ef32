"""The evaluation report: one self-contained HTML page (inline CSS and JS, no network).

:func:`report_data` gathers everything the page shows into one JSON-able dict (rounded numbers,
class indices instead of names per segment); :func:`write_report` embeds it in
``report_template.html`` and writes the file atomically. The page only draws: every number is
computed here or in :mod:`afsd_cli.evaluation.breakdown`. No torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from afsd_cli.errors import InputError
from afsd_cli.evaluation.breakdown import ERROR_TYPES, LENGTH_NAMES, MIN_TIOU, Diagnosis, diagnose
from afsd_cli.evaluation.detection_map import EvaluationResult, interpolated_ap
from afsd_cli.evaluation.detections import Detections
from afsd_cli.evaluation.ground_truth import GroundTruth

REPORT_FORMAT = 1
PR_RECALL_POINTS = np.linspace(0.0, 1.0, 51)
# Detections drawn per video and run; lower-scored ones are only counted: the official
# post-processing keeps up to 5000 per class (AFSD/thumos14/test.py top_k), and a page must stay
# a few MB. The metric and the breakdown use every detection.
MAX_DRAWN_PER_VIDEO = 400
MIN_DRAWN_PER_VIDEO = 20
DRAWN_PER_RUN = 100_000  # over all videos: an ActivityNet validation set draws 21 per video
DATA_MARKER = "/*__REPORT_DATA__*/"


@dataclass
class ReportRun:
    """One evaluated detection file: its name on the page, the detections and their result
    (``evaluate_detections`` output, which carries the matches) and optional run information
    (``run_info_beside``)."""

    name: str
    detections: Detections
    result: EvaluationResult
    info: dict[str, Any] = field(default_factory=dict)


def run_info_beside(detections_path: str | Path) -> dict[str, str]:
    """The run's resolved ``config.yaml`` and ``env.json`` (versions, command), as text, when the
    detections file lies in a run folder beside them; ``{}`` otherwise. Shown, never interpreted:
    an unreadable file is noted instead of failing the report."""
    folder = Path(detections_path).parent
    info: dict[str, str] = {}
    for key, name in (("config", "config.yaml"), ("env", "env.json")):
        path = folder / name
        if path.is_file():
            try:
                info[key] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                info[key] = f"(unreadable: {exc})"
    return info


def write_report(path: str | Path, ground_truth: GroundTruth, runs: Sequence[ReportRun], title: str | None = None) -> Path:
    """Write the HTML report of ``runs`` (one, or two side by side) against ``ground_truth``."""
    from afsd_cli.io import write_text

    html = render_report(report_data(ground_truth, runs, title))
    try:
        return write_text(path, html)
    except OSError as exc:
        raise InputError(f"cannot write report: {exc.strerror or exc}", path) from None


def render_report(data: dict[str, Any]) -> str:
    """The page: the template with ``data`` embedded as JSON (``<`` escaped so that no name in
    the data can close the script element)."""
    template = resources.files("afsd_cli.evaluation").joinpath("report_template.html").read_text(encoding="utf-8")
    blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    blob = blob.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return template.replace(DATA_MARKER, blob, 1)


def report_data(ground_truth: GroundTruth, runs: Sequence[ReportRun], title: str | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able data."""
    if not runs:
        raise ValueError("a report needs at least one run")
    thresholds = runs[0].result.tiou_thresholds
    for run in runs[1:]:
        if not np.array_equal(run.result.tiou_thresholds, thresholds):
            raise InputError(f"{run.name}: evaluated at other tIoU thresholds than {runs[0].name}")
    diagnoses = [diagnose(ground_truth, run.detections, run.result) for run in runs]
    members = _instances_of_videos(ground_truth)
    return {
        "format": REPORT_FORMAT,
        "title": title or "AFSD evaluation report",
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "generator": _generator(),
        "dataset": ground_truth.dataset,
        "subset": ground_truth.subset,
        "thresholds": [float(t) for t in thresholds],
        "classes": list(ground_truth.class_names),
        "error_types": list(ERROR_TYPES),
        "min_tiou": MIN_TIOU,
        "limit_factor": diagnoses[0].limit_factor,
        "length_bins": _length_bin_names(diagnoses[0].length_edges),
        "length_total": diagnoses[0].length_total.tolist(),
        "ground_truth": {
            "source": ground_truth.source,
            "instances": len(ground_truth),
            "videos": len(ground_truth.videos),
            "skipped_ambiguous": ground_truth.skipped_ambiguous,
        },
        "videos": [
            {"name": name, "gt": [
                [int(ground_truth.label_index[i]), _t(ground_truth.starts[i]), _t(ground_truth.ends[i])] for i in members[v]
            ]}
            for v, name in enumerate(ground_truth.videos)
        ],
        "runs": [_run_data(ground_truth, run, diagnosis, members) for run, diagnosis in zip(runs, diagnoses)],
    }


def _run_data(ground_truth: GroundTruth, run: ReportRun, diagnosis: Diagnosis, members) -> dict[str, Any]:
    result = run.result
    metrics = result.to_dict()
    return {
        "name": run.name,
        "source": run.detections.source,
        "info": run.info,
        "metrics": metrics,
        "read": len(run.detections),
        "pr": _pr_curves(result, np.bincount(ground_truth.label_index, minlength=len(ground_truth.class_names))),
        "profile": diagnosis.profile.tolist(),
        "gain": np.round(diagnosis.gain, 5).tolist(),
        "fn_missed": diagnosis.length_missed.tolist(),
        **_timelines(ground_truth, run.detections, diagnosis, members),
    }


def _pr_curves(result: EvaluationResult, npos: np.ndarray) -> list[list[list[float]]]:
    """``[threshold][class]``: interpolated precision at ``PR_RECALL_POINTS`` (0 beyond the
    class's last recall), the curve whose area is the class's AP."""
    per_class = [result.matches.of_class(c)[1] for c in range(len(result.class_names))]
    return [[_pr_curve(tp[t], int(npos[c])) for c, tp in enumerate(per_class)] for t in range(len(result.tiou_thresholds))]


def _pr_curve(tp: np.ndarray, npos: int) -> list[float]:
    if tp.size == 0 or npos == 0:
        return [0.0] * PR_RECALL_POINTS.size
    hits = np.cumsum(tp, dtype=np.float64)
    _, mprec, mrec = interpolated_ap(hits / np.arange(1, tp.size + 1), hits / npos)
    # interpolated precision at recall r: the best precision at any recall >= r (as detection_map)
    at = np.searchsorted(mrec[0], PR_RECALL_POINTS - 1e-12, side="left")
    values = np.where(at < mrec.shape[1], mprec[0][np.minimum(at, mrec.shape[1] - 1)], 0.0)
    return np.round(values, 3).tolist()


def _timelines(ground_truth: GroundTruth, detections: Detections, diagnosis: Diagnosis, members) -> dict[str, Any]:
    """Per video: the best-scored ``drawn_per_video`` detections as flat rows
    ``[class, start, end, score, best-overlap tIoU, best instance (index in the video, -1), codes]``
    (``codes``: one digit per threshold, an index into ``ERROR_TYPES``), how many more there are,
    and per instance a bit mask of the thresholds at which it was matched."""
    n_videos = len(ground_truth.videos)
    local = np.empty(len(ground_truth), dtype=np.int64)  # instance index inside its video
    for v in range(n_videos):
        local[members[v]] = np.arange(members[v].size)
    scores = detections.scores[diagnosis.detection]
    by_video = np.lexsort((-scores, diagnosis.video))
    bounds = np.searchsorted(diagnosis.video[by_video], np.arange(n_videos + 1))
    starts, ends = detections.starts[diagnosis.detection], detections.ends[diagnosis.detection]
    digits = np.array(list("0123456789"))
    codes = ["".join(row) for row in digits[diagnosis.codes.T]] if diagnosis.codes.size else [""] * scores.size
    cap = drawn_per_video(n_videos)
    rows, omitted = [], []
    for v in range(n_videos):
        part = by_video[bounds[v] : bounds[v + 1]]
        omitted.append(max(0, part.size - cap))
        flat: list[Any] = []
        for i in part[:cap].tolist():
            best = int(diagnosis.best.instance[i])
            flat += [
                int(diagnosis.label[i]), _t(starts[i]), _t(ends[i]), round(float(scores[i]), 4),
                round(float(diagnosis.best.tiou[i]), 3), int(local[best]) if best >= 0 else -1, codes[i],
            ]
        rows.append(flat)
    bits = (diagnosis.gt_matched.astype(np.int64) << np.arange(diagnosis.gt_matched.shape[0])[:, None]).sum(axis=0)
    matched = [bits[members[v]].tolist() for v in range(n_videos)]
    return {"detections": rows, "omitted": omitted, "matched": matched}


def drawn_per_video(n_videos: int) -> int:
    """How many detections per video and run the timelines hold (the best-scored ones)."""
    return int(np.clip(DRAWN_PER_RUN // max(n_videos, 1), MIN_DRAWN_PER_VIDEO, MAX_DRAWN_PER_VIDEO))


def _instances_of_videos(ground_truth: GroundTruth) -> list[np.ndarray]:
    """Instance indices of each video, in file order."""
    order = np.argsort(ground_truth.video_index, kind="stable")
    bounds = np.searchsorted(ground_truth.video_index[order], np.arange(len(ground_truth.videos) + 1))
    return [order[bounds[v] : bounds[v + 1]] for v in range(len(ground_truth.videos))]


def _length_bin_names(edges: Sequence[float]) -> list[str]:
    uppers = [f"{b:g}" for b in edges[1:]]
    names = []
    for k, name in enumerate(LENGTH_NAMES[: len(edges)]):
        low = f"{edges[k]:g}"
        names.append(f"{name} ({low}–{uppers[k]} s]" if k < len(uppers) else f"{name} (> {low} s)")
    return names


def _t(seconds: float) -> float:
    return round(float(seconds), 2)


def _generator() -> str:
    from afsd_cli import __version__

    return f"afsd {__version__}, Python {platform.python_version()}, NumPy {np.__version__}"
