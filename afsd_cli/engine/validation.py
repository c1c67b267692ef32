"""Validation during training: ``afsd predict`` + ``afsd evaluate`` through their Python APIs.

The videos are the config's ``dataset.testing`` split and the ground truth its
``dataset.testing.gt_path`` (subset ``dataset.testing.subset``). For honest model selection
point them at a held-out validation list, not at the test set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from afsd_cli.errors import ConfigError


def validation_map(cfg: Any, checkpoint: str | Path, output_json: str | Path, device: str = "cpu",
                   limit: int | None = None, progress: Callable[[int, int], Any] | None = None) -> float:
    """Average mAP of ``checkpoint`` on the config's testing split; detections go to ``output_json``.
    ``progress(videos_done, videos)`` is called as the videos finish."""
    from afsd_cli.engine.planning import plan_prediction
    from afsd_cli.engine.postprocess import results_document
    from afsd_cli.evaluation import evaluate_detections, load_ground_truth
    from afsd_cli.io import write_json

    testing = cfg.dataset.testing
    gt_path = getattr(testing, "gt_path", None)
    if not gt_path:
        raise ConfigError("training.validate_every is set but dataset.testing.gt_path (validation ground truth) is not")
    plan = plan_prediction(cfg, [checkpoint], device=device, limit=limit)
    results: dict[str, list] = {}
    for done, video in enumerate(plan.predictor.run(plan.jobs), start=1):
        if video.error is None:
            results[video.key] = video.detections
        if progress is not None:
            progress(done, len(plan.jobs))
    document = results_document(results, plan.version, plan.profile.to_dict())
    write_json(output_json, document)
    ground_truth = load_ground_truth(gt_path, subset=plan.profile.test_subset, dataset=plan.profile.kind)
    return float(evaluate_detections(ground_truth, document).average_mAP)
