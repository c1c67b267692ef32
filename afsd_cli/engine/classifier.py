"""External video-level classification (ActivityNet): the CUHK file ``anet/test.py`` reads, whose
top class labels a video's class-agnostic proposals (engine/postprocess.py relabel_with_classifier)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from afsd_cli.errors import InputError
from afsd_cli.io import read_json
from afsd_cli.names import check_video_name, without_v_prefix


@dataclass
class Classifier:
    """Per-video class scores and the class names they refer to."""

    scores: dict[str, list[float]]
    classes: list[str]
    source: str

    def top1(self, video: str) -> tuple[str, float] | None:
        scores = self.scores.get(without_v_prefix(video), self.scores.get(video))
        if scores is None:
            return None
        best = int(np.argmax(scores))
        return self.classes[best], float(max(scores))


def read_classifier(path: str | Path) -> Classifier:
    """Read a CUHK-style ``{"results": {video: [scores]}, "class": [names]}`` JSON."""
    path = Path(path)
    data = read_json(path, "classifier file")
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) or not isinstance(data.get("class"), list):
        raise InputError('expected {"results": {video: [scores]}, "class": [names]} (CUHK format)', path)
    classes = [str(c) for c in data["class"]]
    for number, (video, scores) in enumerate(data["results"].items(), start=1):
        check_video_name(video, str(path), f"results entry {number}")
        if not isinstance(scores, list) or len(scores) != len(classes):
            raise InputError(f"video {video!r}: expected {len(classes)} scores, one per class", path)
    return Classifier(data["results"], classes, str(path))
