"""From raw network outputs to detections (official ``AFSD/thumos14/test.py``, ``AFSD/anet/test.py``):
decoding, soft-NMS, JSON assembly.

The arithmetic follows the official test scripts operation by operation, in float32 and in the
same order, so that the same raw outputs give the same numbers (to the last bit on the same
machine, see ``tests/test_postprocess.py``):

* :func:`refine_segments`: coarse distances ``(l, r)`` refined by the proposal offsets,
  ``l̂ = l + (l + r)/2 · Δl``, turned into ``[p·L − l̂, p·L + r̂]`` and clamped to ``[0, L]``.
* :func:`location_scores`: ``sigmoid(center) · (softmax(conf) + softmax(prop_conf)) / 2``.
* :func:`~afsd_cli.ops.soft_nms.soft_nms` (in ``ops/``): the official ``softnms_v2`` (Gaussian
  decay, no IoU threshold) including its quirk of never emitting the last remaining candidate
  (``emit_last=False``).
* :func:`assemble_detections`: per-class candidates of all windows → soft-NMS → JSON entries.

Two fixes of official quirks are switches, off by default (``PostprocessSettings``):
``emit_last`` (``testing.softnms_emit_last``) and ``clip_to_video`` (``testing.clip_to_video``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from afsd_cli.config import Config

from afsd_cli.ops.soft_nms import soft_nms


class RawOutputs(NamedTuple):
    """The network outputs decoding needs, for ``W`` windows of one video (or one window).

    Shapes: ``loc [W, K, 2]``, ``conf [W, K, C]``, ``prop_loc [W, K, 2]``,
    ``prop_conf [W, K, C]``, ``center [W, K, 1]``, ``priors [K, 1]`` (normalised centres, the
    same for every window). ``conf``, ``prop_conf`` and ``center`` are logits.
    """

    loc: torch.Tensor
    conf: torch.Tensor
    prop_loc: torch.Tensor
    prop_conf: torch.Tensor
    center: torch.Tensor
    priors: torch.Tensor


@dataclass(frozen=True)
class PostprocessSettings:
    """Thresholds and switches of the post-processing.

    ``candidate_thresh``: a location is a candidate of class ``c`` when its score is strictly
    greater (THUMOS14: ``testing.conf_thresh`` = 0.01; ActivityNet: 1e-9, fusion 0, hard-coded
    in the official scripts). ``nms_score_thresh``: soft-NMS drops candidates whose decayed score
    falls below it (0.001 THUMOS14, 1e-9 ActivityNet, 1e-18 ActivityNet fusion).
    """

    clip_length: int = 256
    candidate_thresh: float = 0.01
    nms_sigma: float = 0.5
    top_k: int = 5000
    nms_score_thresh: float = 0.001
    emit_last: bool = False
    clip_to_video: bool = False


def settings_from_config(cfg: Config, fusion: bool = False) -> PostprocessSettings:
    """The post-processing settings of a loaded config (official values by default; the
    thresholds the official scripts hard-code per dataset come from its profile)."""
    from afsd_cli.profile import kind_rules

    testing = cfg.testing
    candidate, nms_score = kind_rules(str(cfg.dataset.name)).thresholds[1 if fusion else 0]
    from afsd_cli.features.timeline import FRAMES_PER_FEATURE

    # feature configs count features; the network's clip is 4 frames per feature
    frames_per_step = FRAMES_PER_FEATURE if cfg.model.input == "features" else 1
    return PostprocessSettings(
        clip_length=int(cfg.dataset.testing.clip_length) * frames_per_step,
        candidate_thresh=float(testing.conf_thresh) if candidate is None else candidate,
        nms_sigma=float(testing.nms_sigma),
        top_k=int(testing.top_k),
        nms_score_thresh=nms_score,
        emit_last=testing.softnms_emit_last,
        clip_to_video=testing.clip_to_video,
    )


# --------------------------------------------------------------------------- decoding


def refine_segments(loc: torch.Tensor, prop_loc: torch.Tensor, priors: torch.Tensor,
                    clip_length: int) -> torch.Tensor:
    """Refined, clamped segments ``[..., K, 2]`` in frames of the clip (official op order)."""
    width = loc[..., :1] + loc[..., 1:]
    refined = 0.5 * width * prop_loc + loc
    centre = priors[..., :1] * clip_length
    segments = torch.cat([centre - refined[..., :1], centre + refined[..., 1:]], dim=-1)
    return segments.clamp_(min=0, max=clip_length)


def location_scores(conf: torch.Tensor, prop_conf: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Per-location class scores ``[..., K, C]`` from logits (official op order)."""
    coarse = torch.softmax(conf, dim=-1)
    refined = torch.softmax(prop_conf, dim=-1)
    return (coarse + refined) / 2.0 * center.sigmoid()


def average_outputs(first: RawOutputs, second: RawOutputs) -> RawOutputs:
    """THUMOS14 two-stream fusion (``thumos14/test.py --fusion``): raw outputs averaged before decoding."""
    return RawOutputs(
        loc=(first.loc + second.loc) / 2.0,
        conf=(first.conf + second.conf) / 2.0,
        prop_loc=(first.prop_loc + second.prop_loc) / 2.0,
        prop_conf=(first.prop_conf + second.prop_conf) / 2.0,
        center=(first.center + second.center) / 2.0,
        priors=first.priors,
    )


def decode(raw: RawOutputs, clip_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(segments [W, K, 2] in clip frames, scores [W, K, C])`` of one stream."""
    segments = refine_segments(raw.loc, raw.prop_loc, raw.priors, clip_length)
    return segments, location_scores(raw.conf, raw.prop_conf, raw.center)


def decode_fused(rgb: RawOutputs, flow: RawOutputs, mode: str, clip_length: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-stream decoding: ``mode="average"`` (``thumos14/test.py --fusion``) or ``"geometric"``
    (``anet/test_fusion.py``).

    ``geometric``: each stream decodes its own refined segments, the fused segment is their
    element-wise geometric mean; the score logits are averaged as in ``average``.
    """
    averaged = average_outputs(rgb, flow)
    if mode == "average":
        return decode(averaged, clip_length)
    if mode != "geometric":
        raise ValueError(f"unknown fusion mode {mode!r}")
    segments = torch.sqrt(refine_segments(rgb.loc, rgb.prop_loc, rgb.priors, clip_length)
                          * refine_segments(flow.loc, flow.prop_loc, flow.priors, clip_length))
    return segments, location_scores(averaged.conf, averaged.prop_conf, averaged.center)


def window_candidates(segments: np.ndarray, scores: np.ndarray, offset: int, sample_fps: float,
                      threshold: float) -> list[np.ndarray | None]:
    """Candidates of one window, per class: ``(start_s, end_s, score)`` float32 rows or ``None``.

    ``segments [K, 2]`` in clip frames, ``scores [K, C]`` (float32 arrays); index 0
    (background) is always None. Seconds are ``(frames + offset) / sample_fps`` in float32, the
    same IEEE operations as the official torch code.
    """
    segments = np.asarray(segments, dtype=np.float32)
    class_scores = np.asarray(scores, dtype=np.float32).T
    per_class: list[np.ndarray | None] = [None]
    for cls in range(1, class_scores.shape[0]):
        keep = class_scores[cls] > threshold
        if not keep.any():
            per_class.append(None)
            continue
        seconds = (segments[keep] + np.float32(offset)) / np.float32(sample_fps)
        per_class.append(np.concatenate([seconds, class_scores[cls][keep][:, None]], axis=1))
    return per_class


# --------------------------------------------------------------------------- assembly


class VideoMeta(NamedTuple):
    """What assembly needs about a video: its fps for seconds, its duration for clipping.

    ``time_origin``: seconds at frame 0 (0 for frames; a feature model's network frames start at
    ``(clip_frames - stride) / (2·fps)``, ``features/timeline.py``)."""

    name: str
    sample_fps: float
    duration: float | None = None
    time_origin: float = 0.0


def class_candidates(segments: np.ndarray, scores: np.ndarray, offsets: Sequence[int],
                     sample_fps: float, threshold: float) -> list[np.ndarray | None]:
    """All windows' candidates concatenated per class (window order, then location order)."""
    num_classes = scores.shape[-1]
    gathered: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    for window, offset in enumerate(offsets):
        for cls, rows in enumerate(window_candidates(segments[window], scores[window], int(offset),
                                                     sample_fps, threshold)):
            if rows is not None:
                gathered[cls].append(rows)
    return [np.concatenate(rows, axis=0) if rows else None for rows in gathered]


def assemble_detections(segments: Any, scores: Any, offsets: Sequence[int],
                        video: VideoMeta, settings: PostprocessSettings,
                        class_names: Sequence[str] | None) -> list[dict[str, Any]]:
    """Detections of one video from decoded ``segments [W, K, 2]`` and ``scores [W, K, C]``.

    ``class_names[c - 1]`` labels model class ``c``; ``None`` keeps the class ids as labels
    (the caller relabels, e.g. ActivityNet's external classifier). NumPy only (arrays or CPU
    tensors in), so that it can run in worker processes.
    """
    if isinstance(segments, torch.Tensor):
        segments, scores = segments.detach().cpu().numpy(), scores.detach().cpu().numpy()
    per_class = class_candidates(segments, scores, offsets, video.sample_fps, settings.candidate_thresh)
    return detections_from_candidates(per_class, video, settings, class_names)


def detections_from_candidates(per_class: Sequence[np.ndarray | None], video: VideoMeta,
                               settings: PostprocessSettings,
                               class_names: Sequence[str] | None) -> list[dict[str, Any]]:
    """Per-class soft-NMS of a whole video's candidates (see :func:`class_candidates`) → JSON
    entries. The step that needs every window (engine/streaming.py keeps the candidates until it)."""
    detections: list[dict[str, Any]] = []
    for cls in range(1, len(per_class)):
        rows = per_class[cls]
        if rows is None:
            continue
        kept = soft_nms(rows, sigma=settings.nms_sigma, top_k=settings.top_k,
                        score_threshold=settings.nms_score_thresh, emit_last=settings.emit_last)
        kept = kept[kept[:, 2] > 0]
        label: Any = class_names[cls - 1] if class_names is not None else cls
        for start, end, score in kept.tolist():
            if video.time_origin:
                start, end = start + video.time_origin, end + video.time_origin
            if settings.clip_to_video:
                start = max(0.0, start)
                if video.duration is not None:
                    end = min(video.duration, end)
                if end <= start:
                    continue
            detections.append({"label": label, "score": score, "segment": [start, end]})
    return detections


def relabel_with_classifier(detections: list[dict[str, Any]], label: str, factor: float,
                            duration: float | None) -> list[dict[str, Any]]:
    """ActivityNet (``anet/test.py``): clip to ``[0, duration]``, drop empty, label + score from the
    classifier."""
    out = []
    for det in detections:
        start = max(0.0, det["segment"][0])
        end = det["segment"][1] if duration is None else min(duration, det["segment"][1])
        if end <= start:
            continue
        out.append({"label": label, "score": det["score"] * factor, "segment": [start, end]})
    return out


def results_document(results: dict[str, list[dict[str, Any]]], version: str,
                     profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ActivityNet-style detection file: ``{"version", "results", "external_data"}``, plus
    the dataset ``profile`` that produced it (``afsd evaluate`` takes its subset and thresholds)."""
    document = {"version": version, "results": results, "external_data": {}}
    if profile is not None:
        document["profile"] = profile
    return document
