"""ActivityNet inference against the official implementation (RGB and RGB + flow fusion).

``tests/data/inference_parity/anet_{rgb,fusion}.json.gz`` are the outputs of the official
``AFSD/anet/test.py`` and ``test_fusion.py`` (run once on CPU, their CUDA op replaced by a
pure-PyTorch stand-in) on the seeded weights, arrays, video-info JSON and CUHK classifier file of
``tests/inference_parity.py``. Here the same inputs go through ``plan_prediction`` with the
repository's ``configs/anet.yaml`` (what ``afsd predict`` / ``afsd fuse`` run) and must give the
same detections: same videos (ids without ``v_``), in the same order, same labels, scores and
segments within float tolerance, in the official order (the official per-video order is
well-defined: soft-NMS keeps candidates in their original location order).

Videos: one of 500 frames (padded to the 768-frame window; detections past its duration are
clipped or dropped) and one of 900 frames (truncated to its first 768 frames).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import helpers.inference_parity as P
from afsd_cli.config import load_config
from afsd_cli.engine.planning import plan_prediction
from afsd_cli.model import AFSD, anet_spec

ROOT = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(__file__).parent / "data" / "inference_parity"
#: network outputs shared by the RGB and the fusion checks (the 768-frame forward is the slow part)
FORWARD_CACHE: dict[tuple[int, str], object] = {}


class CachedModel(torch.nn.Module):
    """Wraps a model and remembers its output per input window."""

    def __init__(self, model: AFSD):
        super().__init__()
        self.model = model
        self.spec = model.spec

    def forward(self, clip: torch.Tensor):
        key = (self.spec.in_channels, hashlib.sha1(clip.detach().cpu().numpy().tobytes()).hexdigest())
        if key not in FORWARD_CACHE:
            FORWARD_CACHE[key] = self.model(clip)
        return FORWARD_CACHE[key]


@pytest.fixture(scope="module")
def anet_inputs(tmp_path_factory):
    """The official script's inputs on disk: video info, classifier, arrays, checkpoints."""
    root = tmp_path_factory.mktemp("anet_parity")
    (root / "video_info_train_val.json").write_text(json.dumps(P.anet_video_info()))
    names = (PARITY_DIR / "anet_action_name.txt").read_text().splitlines()
    (root / "cuhk.json").write_text(json.dumps(P.anet_classifier(names)))
    for kind, channels in (("rgb", 3), ("flow", 2)):
        (root / kind).mkdir()
        for name, frames, *_ in P.ANET_VIDEOS:
            np.save(root / kind / f"{name}.npy", P.parity_array(name, frames, channels))
    for kind, channels, seed in (("rgb", 3, P.ANET_RGB_SEED), ("flow", 2, P.ANET_FLOW_SEED)):
        layout = P.state_dict_layout(AFSD(anet_spec(in_channels=channels)).state_dict())
        torch.save(P.seeded_state_dict(layout, seed), root / f"{kind}.ckpt")
    return root


def official(mode: str) -> dict:
    with gzip.open(PARITY_DIR / f"anet_{mode}.json.gz", "rt", encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.parametrize("mode", ["rgb", "fusion"])
def test_anet_detections_equal_the_official_implementation(anet_inputs, mode):
    root = anet_inputs
    cfg = load_config(ROOT / "configs" / "anet.yaml", [
        f"dataset.testing.video_info_path={root / 'video_info_train_val.json'}",
        f"dataset.testing.video_mp4_path={root / 'rgb'}",
    ])
    checkpoints = [root / "rgb.ckpt"] + ([root / "flow.ckpt"] if mode == "fusion" else [])
    dirs = [root / "rgb"] + ([root / "flow"] if mode == "fusion" else [])
    plan = plan_prediction(cfg, checkpoints, data_dirs=dirs if mode == "fusion" else [],
                           classifier_path=root / "cuhk.json", device="cpu")
    assert plan.problems == [] and plan.version == "ActivityNet-v1.3"
    assert [j.name for j in plan.jobs] == [name for name, *_ in P.ANET_VIDEOS]  # training video skipped
    plan.predictor.models = [CachedModel(m) for m in plan.predictor.models]
    results = list(plan.predictor.run(plan.jobs))
    assert all(r.error is None for r in results)
    assert [r.windows for r in results] == [1, 1]  # one window at offset 0: padded / truncated
    expected = official(mode)
    assert expected["version"] == plan.version
    P.assert_same_detections({r.key: r.detections for r in results}, expected)
    # the inputs exercise what they are meant to: detections clipped at the short video's end
    short_id, _, _, duration = P.ANET_VIDEOS[0]
    ends = [d["segment"][1] for d in expected["results"][short_id[2:]]]
    assert max(ends) == pytest.approx(duration)
