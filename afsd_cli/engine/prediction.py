"""Running a :class:`~afsd_cli.engine.planning.PredictionPlan`: its videos through the predictor,
the rule for failed videos, the detections document and its file.

One home for ``afsd predict`` / ``afsd fuse`` (commands/_prediction.py only renders the outcome)
and validation during training (engine/validation.py). The rule: bad inputs found before running
stop the run when ``all_or_nothing`` is set or nothing else is left; a video that fails while
running is left out of the document, unless ``all_or_nothing``, which then writes nothing and
stops at the first failure.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afsd_cli.engine.jobs import VideoJob, VideoResult
from afsd_cli.engine.planning import PredictionPlan
from afsd_cli.errors import InputError


@dataclass
class PredictionTotals:
    """What the videos that succeeded add up to: windows, frames, detections, and the seconds of
    each stage (loading/decoding, network, decoding + soft-NMS: ``VideoResult.timings``)."""

    windows: int = 0
    frames: int = 0
    detections: int = 0
    decode: float = 0.0
    network: float = 0.0
    postprocess: float = 0.0

    def add(self, result: VideoResult) -> None:
        self.windows += result.windows
        self.frames += result.frames
        self.detections += len(result.detections)
        self.decode += result.timings.get("decode", 0.0)
        self.network += result.timings.get("network", 0.0)
        self.postprocess += result.timings.get("postprocess", 0.0)


@dataclass
class PredictionOutcome:
    """What a run gave: the detections of the videos that succeeded, the videos that failed while
    running, and the document (``None`` when nothing is to be written)."""

    results: dict[str, list[dict[str, Any]]]  # output key → detections, in job order
    failures: list[VideoResult]  # ``error`` set
    jobs: int  # videos run (the plan's, less the bad inputs set aside before running)
    skipped: int  # videos set aside before running (the plan's problems)
    totals: PredictionTotals = field(default_factory=PredictionTotals)
    seconds: float = 0.0
    document: dict[str, Any] | None = None
    written: Path | None = None  # where the document was written

    @property
    def stopped_early(self) -> bool:
        """Whether the run stopped at the first failure (``all_or_nothing``) before every video ran."""
        return len(self.results) + len(self.failures) != self.jobs


def runnable_jobs(plan: PredictionPlan, all_or_nothing: bool = False) -> list[VideoJob]:
    """The jobs that will run: those without bad inputs. InputError when bad inputs stop the run
    before any network runs (``all_or_nothing``, or no other video left)."""
    jobs = plan.without_bad_videos()
    if plan.problems and (all_or_nothing or not jobs):
        raise InputError(f"{len(plan.problems)} bad input(s); nothing was written")
    return jobs


def predict_plan(plan: PredictionPlan, output: str | Path | None = None, *, all_or_nothing: bool = False,
                 workers: int = 0, plot_dir: Path | None = None,
                 ground_truth: dict[str, list[tuple[float, float, str]]] | None = None,
                 on_video: Callable[[VideoResult], Any] | None = None,
                 on_progress: Callable[[Any], None] | None = None,
                 on_region: Callable[[Any], None] | None = None) -> PredictionOutcome:
    """Run ``plan``; write its detections document to ``output`` (atomically) unless the rule for
    failed videos says nothing is written, or ``output`` is ``None``.

    ``on_video(result)`` is called as each video finishes (failed ones too). ``plot_dir``: a
    timeline PNG per video that succeeded, with its ``ground_truth`` rows when given (read by
    engine/plots.py read_ground_truth). ``workers``, ``on_progress`` and ``on_region``: see
    :meth:`~afsd_cli.engine.inference.Predictor.run`.
    """
    jobs = runnable_jobs(plan, all_or_nothing)
    outcome = PredictionOutcome({}, [], len(jobs), len(plan.jobs) - len(jobs))
    started = time.perf_counter()
    predictor = plan.predictor
    try:
        with contextlib.closing(predictor.run(jobs, postprocess_workers=workers, on_progress=on_progress,
                                              on_region=on_region)) as results:
            for result in results:
                if on_video is not None:
                    on_video(result)
                if result.error:
                    outcome.failures.append(result)
                    if all_or_nothing:
                        break  # nothing will be written: the other videos need not run
                    continue
                outcome.results[result.key] = result.detections
                outcome.totals.add(result)
                if plot_dir is not None:
                    _plot(plan, result, plot_dir, ground_truth)
    finally:
        predictor.close()
    outcome.seconds = time.perf_counter() - started
    if outcome.failures and (all_or_nothing or not outcome.results):
        return outcome  # nothing is written
    outcome.document = detections_document(plan, outcome.results)
    if output is not None:
        from afsd_cli.io import write_json

        outcome.written = write_json(output, outcome.document, indent=None)
    return outcome


def detections_document(plan: PredictionPlan, results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The ActivityNet-style detections file of a plan's results, with its dataset profile."""
    from afsd_cli.engine.postprocess import results_document

    profile = plan.profile.to_dict() if plan.profile is not None else None
    return results_document(results, plan.version, profile)


def _plot(plan: PredictionPlan, result: VideoResult, plot_dir: Path,
          ground_truth: dict[str, list[tuple[float, float, str]]] | None) -> None:
    from afsd_cli.engine.plots import plot_timeline

    gt = None if ground_truth is None else ground_truth.get(result.key, ground_truth.get(result.name, []))
    duration = next((job.duration for job in plan.jobs if job.name == result.name), None)
    plot_timeline(plot_dir / f"{result.key}.png", result.key, result.detections, duration, gt)
