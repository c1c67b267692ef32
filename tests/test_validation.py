"""Validation during training (engine/validation.py): the model in memory through the prediction
engine (engine/prediction.py) and the evaluation, as `afsd predict` + `afsd evaluate` would run
its saved checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from afsd_cli.engine.planning import plan_prediction
from afsd_cli.engine.prediction import predict_plan
from afsd_cli.engine.validation import validation_map
from afsd_cli.errors import InputError
from afsd_cli.evaluation import evaluate_detections, load_ground_truth
from afsd_cli.model import build_model, save_checkpoint
from helpers.train_helpers import tiny_config


@pytest.fixture()
def tiny(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path, [f"dataset.testing.gt_path={tmp_path / 'anno.csv'}"])
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def test_the_model_in_memory_scores_as_its_saved_checkpoint(tmp_path, tiny):
    cfg, model = tiny
    save_checkpoint(model, tmp_path / "model.ckpt")
    model.train()  # as the trainer hands it over
    modes = [module.training for module in model.modules()]
    weights = {key: value.clone() for key, value in model.state_dict().items()}

    in_memory = validation_map(cfg, model, tmp_path / "memory.json")

    # its modes restored, its weights untouched
    assert [module.training for module in model.modules()] == modes
    assert all(torch.equal(weights[key], value) for key, value in model.state_dict().items())
    # the saved checkpoint through the engine of `afsd predict`, scored as `afsd evaluate` does
    plan = plan_prediction(cfg, [tmp_path / "model.ckpt"], device="cpu")
    outcome = predict_plan(plan, tmp_path / "checkpoint.json")
    truth = load_ground_truth(tmp_path / "anno.csv", subset=plan.profile.test_subset, dataset=plan.profile.kind)
    assert in_memory == float(evaluate_detections(truth, outcome.document).average_mAP)
    written = json.loads((tmp_path / "memory.json").read_text())
    assert written["results"] == outcome.document["results"] and any(written["results"].values())
    # a (Distributed)DataParallel wrapper is looked through
    assert validation_map(cfg, torch.nn.DataParallel(model), tmp_path / "wrapped.json") == in_memory


def test_a_bad_video_is_reported_not_dropped(tmp_path, tiny):
    cfg, model = tiny
    np.save(tmp_path / "npy" / "video_b.npy", np.zeros((40, 32, 32), np.uint8))  # no channel axis
    with pytest.raises(InputError, match=r"validation: 1 bad input\(s\): .*video_b\.npy"):
        validation_map(cfg, model, tmp_path / "val.json")
    assert not (tmp_path / "val.json").exists()
