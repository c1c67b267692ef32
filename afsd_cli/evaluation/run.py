"""``afsd evaluate`` as library steps: check the request, evaluate, write what it asks for.

:func:`run_evaluation` checks every option and every output before reading a file, picks the
dataset kind, subset and thresholds (``datasets.choose_evaluation``: the flags, then the
detections' recorded profile or version, then the ground truth's layout), evaluates the
detections (and the ``--compare`` file) and claims the run folder; :func:`write_metrics`,
:func:`write_evaluation_report` and :func:`save_evaluation_plots` write the outputs.
``commands/evaluate.py`` only parses the options and renders. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from afsd_cli.errors import InputError
from afsd_cli.evaluation.datasets import EvaluationChoice, choose_evaluation, dataset_defaults, parse_tiou
from afsd_cli.evaluation.detection_map import EvaluationResult, evaluate_detections
from afsd_cli.evaluation.detections import Detections, load_detections
from afsd_cli.evaluation.ground_truth import GroundTruth, load_ground_truth
from afsd_cli.evaluation.matching import TIE_BREAKS

COMMAND = "evaluate"  # runs/evaluate/<name>/
METRICS_NAME = "metrics.json"
REPORT_NAME = "report.html"  # written in the run folder unless --report says elsewhere


@dataclass(frozen=True)
class EvaluationRequest:
    """What ``afsd evaluate`` is asked: the files, the choices (``None``: decided by the files)
    and the outputs (``output`` None: a new run folder under ``runs_dir``)."""

    detections: Path
    ground_truth: Path
    dataset: str | None = None
    subset: str | None = None
    tiou: str | None = None  # the --tiou text (datasets.parse_tiou)
    ties: str = "official"
    strict: bool = False
    compare: Path | None = None  # a second detections file, shown beside ``detections``
    output: Path | None = None  # the metrics JSON exactly here, without a run folder
    name: str | None = None
    exist_ok: bool = False
    runs_dir: Path | None = None
    report: Path | None = None
    plot: Path | None = None


@dataclass(frozen=True)
class EvaluatedFile:
    """One detections file and its evaluation."""

    path: Path
    detections: Detections
    result: EvaluationResult


@dataclass(frozen=True)
class EvaluationOutputs:
    """Where the outputs go: the run folder (None with ``--output``), the metrics JSON, the
    report (None: none) and the plot folder (None: none)."""

    run_dir: Path | None
    metrics: Path
    report: Path | None
    plot: Path | None


@dataclass(frozen=True)
class Evaluation:
    """Everything ``afsd evaluate`` shows and writes."""

    choice: EvaluationChoice
    ground_truth: GroundTruth
    evaluated: EvaluatedFile
    baseline: EvaluatedFile | None  # the --compare file; differences read evaluated minus baseline
    outputs: EvaluationOutputs


def run_evaluation(request: EvaluationRequest) -> Evaluation:
    """Check, evaluate, then claim the run folder (only once there are metrics to write)."""
    thresholds = _check_choices(request)
    runs_base = _check_outputs(request)
    detections = load_detections(request.detections)
    choice = choose_evaluation(detections, request.dataset, request.subset, thresholds)
    ground_truth = load_ground_truth(request.ground_truth, choice.subset, choice.dataset)
    evaluated = _evaluate_file(request, request.detections, detections, ground_truth, choice,
                               with_pr_curves=request.plot is not None)
    baseline = None
    if request.compare is not None:
        baseline = _evaluate_file(request, request.compare, load_detections(request.compare), ground_truth, choice)
    return Evaluation(choice, ground_truth, evaluated, baseline, _claim_outputs(request, runs_base))


def _check_choices(request: EvaluationRequest) -> tuple[float, ...] | None:
    """The option errors, first of all: unknown dataset kind or tie-break, malformed --tiou."""
    if request.dataset is not None:
        dataset_defaults(request.dataset)
    if request.ties not in TIE_BREAKS:
        raise InputError(f"--ties: unknown tie-break {request.ties!r} (choose one of: {', '.join(TIE_BREAKS)})")
    return parse_tiou(request.tiou) if request.tiou is not None else None


def _check_outputs(request: EvaluationRequest) -> Path:
    """Conflicting or unwritable outputs fail before the (possibly long) evaluation, not after it.
    Returns the folder of the runs."""
    from afsd_cli.io import ensure_writable
    from afsd_cli.runs import check_output_options, check_run_name, default_runs_dir

    check_output_options(COMMAND, request.output, request.name, request.exist_ok)
    runs_base = request.runs_dir or default_runs_dir(COMMAND)
    check_run_name(runs_base, request.name, request.exist_ok)
    if request.compare is not None and request.output is not None and request.report is None:
        raise InputError("--compare writes an HTML page: with --output, say where with --report PATH.html")
    for path in (request.output, request.report):
        if path is not None:
            ensure_writable(path, kind="file")
    if request.output is None:  # the run folder to be, or the folder it will be created in
        ensure_writable(runs_base / (request.name or ("exp" if request.exist_ok else "")), kind="folder")
    if request.plot is not None:
        ensure_writable(request.plot, kind="folder")
    return runs_base


def _evaluate_file(request: EvaluationRequest, path: Path, detections: Detections, ground_truth: GroundTruth,
                   choice: EvaluationChoice, with_pr_curves: bool = False) -> EvaluatedFile:
    result = evaluate_detections(ground_truth, detections, choice.tiou_thresholds, strict=request.strict,
                                 tie_break=request.ties, with_pr_curves=with_pr_curves)
    return EvaluatedFile(path, detections, result)


def _claim_outputs(request: EvaluationRequest, runs_base: Path) -> EvaluationOutputs:
    """``--output`` as given, or a new run folder (with env.json) holding metrics and report."""
    from afsd_cli.runs import new_run_dir, write_env

    if request.output is not None:
        return EvaluationOutputs(None, request.output, request.report, request.plot)
    run_dir = new_run_dir(runs_base, request.name, request.exist_ok)
    write_env(run_dir)
    report = request.report if request.report is not None else run_dir / REPORT_NAME
    return EvaluationOutputs(run_dir, run_dir / METRICS_NAME, report, request.plot)


def file_label(path: Path, other: Path | None) -> str:
    """A detections file's name on the page and in the table: its stem, or its parent folder
    too when both files' stems are equal."""
    if other is not None and Path(other).stem == path.stem:
        return f"{path.parent.name}/{path.stem}"
    return path.stem


def write_metrics(evaluation: Evaluation) -> Path:
    """The metrics JSON; the detections' dataset profile travels with the numbers."""
    from afsd_cli.io import write_json

    path = evaluation.outputs.metrics
    metrics = evaluation.evaluated.result.to_dict()
    if evaluation.evaluated.detections.profile is not None:
        metrics["profile"] = evaluation.evaluated.detections.profile
    try:
        return write_json(path, metrics)
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", path) from None


def write_evaluation_report(evaluation: Evaluation, path: Path) -> Path:
    """The HTML report (``report.py``): the baseline first, when there is one."""
    from afsd_cli.evaluation.report import ReportRun, run_info_beside, write_report

    files = [evaluation.evaluated] if evaluation.baseline is None else [evaluation.baseline, evaluation.evaluated]
    runs = [ReportRun(file_label(file.path, _other_path(evaluation, file)), file.detections, file.result,
                      run_info_beside(file.path)) for file in files]
    return write_report(path, evaluation.ground_truth, runs)


def _other_path(evaluation: Evaluation, file: EvaluatedFile) -> Path | None:
    """The path a file's label is told apart from: the other file of a comparison."""
    if evaluation.baseline is None:
        return None
    return evaluation.baseline.path if file is evaluation.evaluated else evaluation.evaluated.path


def save_evaluation_plots(evaluation: Evaluation, folder: Path) -> list[Path]:
    """pr_curves.png and per_class_ap.png in ``folder``."""
    from afsd_cli.evaluation.plots import save_plots

    try:
        return save_plots(evaluation.evaluated.result, folder)
    except OSError as exc:
        raise InputError(f"cannot write plots: {exc.strerror or exc}", folder) from None
