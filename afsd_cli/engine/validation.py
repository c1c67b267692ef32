"""Validation during training: the model in memory through ``afsd predict``'s engine
(engine/prediction.py) and ``afsd evaluate``'s (afsd_cli/evaluation).

The videos are the config's ``dataset.testing`` split and the ground truth its
``dataset.testing.gt_path`` (subset ``dataset.testing.subset``). For honest model selection
point them at a held-out validation list, not at the test set.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from afsd_cli.config import Config
from afsd_cli.errors import ConfigError, InputError
from afsd_cli.evaluation.ground_truth import GroundTruth
from afsd_cli.profile import DatasetProfile, resolve_profile


def validation_map(cfg: Config, model: torch.nn.Module, output_json: str | Path, device: str = "cpu",
                   limit: int | None = None, progress: Callable[[int, int], Any] | None = None,
                   ground_truth: GroundTruth | None = None) -> float:
    """Average mAP of ``model`` (as it is in memory; a DDP wrapper is looked through) on the
    config's testing split; the detections go to ``output_json``. ``progress(videos_done, videos)``
    is called as the videos finish; ``ground_truth``: the one :func:`check_validation_inputs`
    returned (read again from ``dataset.testing.gt_path`` when not given).

    The model runs in eval mode on ``device``; its train/eval modes and its device are restored
    afterwards and its weights are not touched. InputError when a video's input is bad or a video
    fails: a mAP without it would count its actions as missed.
    """
    from afsd_cli.evaluation import evaluate_detections
    from afsd_cli.io import write_json

    if ground_truth is None:
        ground_truth = validation_ground_truth(cfg)
    if not isinstance(model, torch.nn.Module):  # the checkpoint path of an older caller
        raise TypeError(f"validation_map takes the model in memory, not {type(model).__name__}")
    document = _detections(cfg, _unwrapped(model), device, limit, progress)
    write_json(output_json, document)
    return float(evaluate_detections(ground_truth, document).average_mAP)


def validation_ground_truth(cfg: Config, profile: DatasetProfile | None = None) -> GroundTruth:
    """The validation ground truth (``dataset.testing.gt_path``, the profile's test subset): ConfigError
    when it is not set, InputError naming the file when it is unusable."""
    from afsd_cli.evaluation import load_ground_truth

    gt_path = cfg.dataset.testing.gt_path
    if not gt_path:
        raise ConfigError("training.validate_every is set but dataset.testing.gt_path (validation ground truth) is not")
    profile = profile or resolve_profile(cfg)
    return load_ground_truth(gt_path, subset=profile.test_subset, dataset=profile.kind)


def check_validation_inputs(cfg: Config) -> GroundTruth:
    """Before training: the validation ground truth read, and every held-out array checked as
    ``afsd predict`` checks them (InputError listing the bad ones); returns the ground truth."""
    from afsd_cli.engine.planning import stored_inputs

    profile = resolve_profile(cfg)
    ground_truth = validation_ground_truth(cfg, profile)
    width = cfg.model.feature_dim if profile.input == "features" else cfg.model.in_channels
    _refuse_problems(stored_inputs(cfg, profile, (), [width], None).problems)
    return ground_truth


def _refuse_problems(problems: list[str], what: str = "bad input(s)") -> None:
    """InputError listing the first few problems (a message stays short whatever the count)."""
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise InputError(f"validation: {len(problems)} {what}: {shown}")


def _detections(cfg: Config, network: torch.nn.Module, device: str, limit: int | None,
                progress: Callable[[int, int], Any] | None) -> dict[str, Any]:
    """The detections document of ``network`` on the testing split, as ``afsd predict`` runs it;
    InputError naming the videos with bad inputs or that failed."""
    from afsd_cli.engine.planning import plan_prediction
    from afsd_cli.engine.prediction import predict_plan

    with _restored_afterwards(network):
        plan = plan_prediction(cfg, [network], device=device, limit=limit)
        _refuse_problems(plan.problems)
        done = itertools.count(1)
        outcome = predict_plan(plan, on_video=None if progress is None else (
            lambda _video: progress(next(done), len(plan.jobs))))
    _refuse_problems([f"{video.name}: {video.error}" for video in outcome.failures],
                     f"of {outcome.jobs} video(s) failed")
    return outcome.document


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a (Distributed)DataParallel wrapper, else ``model`` itself."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


@contextlib.contextmanager
def _restored_afterwards(model: torch.nn.Module) -> Iterator[None]:
    """Each submodule's train/eval mode and the parameters' device as they were before (the
    predictor puts the model in eval mode on its device)."""
    modes = {module: module.training for module in model.modules()}
    first = next(model.parameters(), None)
    device = None if first is None else first.device  # read now: moving the model changes it
    try:
        yield
    finally:
        if device is not None:
            model.to(device)
        for module, training in modes.items():
            module.training = training
