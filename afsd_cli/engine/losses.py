"""The AFSD training objective, one function per term (official ``MultiSegmentLoss`` in
``AFSD/{thumos14,anet}/multisegment_loss.py``, ``calc_bce_loss`` and ``forward_one_epoch`` in ``train.py``).

Sums are returned un-normalised by the term functions; :func:`detection_losses` divides by the
positive counts and :func:`weighted_total` applies ``lw``/``cw``/``ssl``. Every term is computed in
float32 whatever the autocast dtype of the network outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch.nn import functional as F

from afsd_cli.engine.targets import ANET_SCALE_RANGES, SegmentTargets, build_targets, segment_iou

#: Names of the loss terms, in the order of the official log line (``trip`` = consistency).
TERM_NAMES: tuple[str, ...] = ("loc", "conf", "prop_loc", "prop_conf", "center", "start", "end", "trip")


@dataclass(frozen=True)
class LossSettings:
    """What the objective depends on. The dataset differences (``AFSD/anet/``) are the fields after
    ``ssl``; :meth:`official` fills them."""

    num_classes: int
    clip_length: int
    lw: float = 10.0
    cw: float = 1.0
    piou: float = 0.5
    ssl: float = 0.1
    scale_ranges: tuple[tuple[float, float], ...] | None = None  # ANet per-level scale ranges
    adaptive_piou: bool = False  # ANet: threshold min(piou, best positive IoU)
    smooth_l1_refinement: bool = False  # ANet: smooth-L1 (beta 1) for the refined boundaries
    per_sample_normalisation: bool = False  # ANet: normalise per sample, average over the batch
    mask_downsample: int = 4  # frames per level-0 step (THUMOS 4, ANet 8)
    mask_rows: tuple[int, int] = (0, 1)  # rows of `scores` holding the start / end masks
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # ANet keeps 4 although its level-0 features are 8 frames apart (official behaviour)
    triplet_scales: tuple[float, float, float] = (1.0, 4.0, 4.0)
    triplet_weights: tuple[float, float, float] = (1.0, 0.1, 0.1)

    @classmethod
    def official(cls, procedure: str, **values: Any) -> "LossSettings":
        """The settings of an official loss procedure (the dataset profile's ``loss_procedure``):
        ``sliding`` (AFSD/thumos14/multisegment_loss.py) or ``single_clip`` (AFSD/anet/multisegment_loss.py)."""
        if procedure == "single_clip":
            length = values.setdefault("clip_length", 768)
            # scale ranges are defined for the 768-frame clip; a shorter preset scales them down
            factor = length / 768.0
            ranges = tuple((lo * factor, hi * factor) for lo, hi in ANET_SCALE_RANGES)
            values = {
                "scale_ranges": ranges, "adaptive_piou": True, "smooth_l1_refinement": True,
                "per_sample_normalisation": True, "mask_downsample": 8, "mask_rows": (1, 2), **values,
            }
        return cls(**values)


# --------------------------------------------------------------------------------------------
# Individual terms
# --------------------------------------------------------------------------------------------
def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Softmax focal loss summed over rows (``FocalLoss_Ori``): ``-α_t (1 - p_t)^γ log p_t``, ``p_t + 1e-6``;
    ``α_t = alpha`` for the background class 0 and ``1 - alpha`` for the others."""
    probability = F.softmax(logits.float(), dim=-1)
    pt = probability.gather(1, target.view(-1, 1).long()).view(-1) + 1e-6
    weight = torch.where(target.view(-1) == 0, alpha, 1.0 - alpha).to(pt.dtype)
    return (-torch.pow(1.0 - pt, gamma) * (weight * pt.log())).sum()


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed ``1 - GIoU`` of ``(left, right)`` distance pairs from a shared centre ``[M,2]``."""
    eps = torch.finfo(torch.float32).eps
    inter = torch.min(pred[:, 0], target[:, 0]) + torch.min(pred[:, 1], target[:, 1])
    union = (target[:, 0] + target[:, 1]) + (pred[:, 0] + pred[:, 1]) - inter
    iou = inter / union.clamp(min=eps)
    enclosing = torch.max(pred[:, 0], target[:, 0]) + torch.max(pred[:, 1], target[:, 1])
    giou = iou - (enclosing - union) / enclosing.clamp(min=eps)
    return (1.0 - giou).sum()


def coarse_boundary_loss(loc: torch.Tensor, loc_t: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """GIoU loss of the coarse distances over the positive priors (sum)."""
    return giou_loss(loc[positive].float(), loc_t[positive].float())


def coarse_classification_loss(conf: torch.Tensor, conf_t: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss of the coarse class logits over every prior (sum)."""
    return focal_loss(conf.reshape(-1, conf.shape[-1]), conf_t.reshape(-1), alpha, gamma)


def refined_boundary_loss(
    prop_loc: torch.Tensor, prop_loc_t: torch.Tensor, prop_positive: torch.Tensor, smooth: bool = False
) -> torch.Tensor:
    """L1 (ANet: smooth-L1, β = 1) of the refinement offsets over refined positives, summed over
    both sides."""
    pred, target = prop_loc[prop_positive].float(), prop_loc_t[prop_positive].float()
    if smooth:
        return F.smooth_l1_loss(pred, target, reduction="sum", beta=1.0)
    return F.l1_loss(pred, target, reduction="sum")


def refined_classification_loss(
    prop_conf: torch.Tensor, prop_conf_t: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss of the refined class logits over every prior (sum)."""
    return focal_loss(prop_conf.reshape(-1, prop_conf.shape[-1]), prop_conf_t.reshape(-1), alpha, gamma)


def quality_loss(
    center: torch.Tensor, loc: torch.Tensor, prop_loc: torch.Tensor, loc_t: torch.Tensor, positive: torch.Tensor
) -> torch.Tensor:
    """BCE-with-logits of the quality ("center") logit against the IoU of the refined segment
    with its target, over the positives (sum). The IoU target keeps its graph (as ``MultiSegmentLoss.forward``)."""
    coarse = loc[positive].float()
    refinement = prop_loc[positive].float()
    refined = 0.5 * (coarse[:, 0] + coarse[:, 1]).unsqueeze(-1) * refinement + coarse
    quality = segment_iou(refined, loc_t[positive].float()).clamp(min=0)
    return F.binary_cross_entropy_with_logits(center[positive.unsqueeze(-1).expand_as(center)].float(), quality, reduction="sum")


def boundary_probability(feature: torch.Tensor) -> torch.Tensor:
    """Per-frame boundary probability ``mean_c tanh(F)`` of a ``[B,T,C]`` feature."""
    return torch.tanh(feature.float()).mean(-1)


def boundary_bce(feature: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE between ``boundary_probability(feature)`` ``[B,T]`` and a 0/1 mask ``[B,T]``."""
    probability = boundary_probability(feature).reshape(-1)
    # autocast would refuse F.binary_cross_entropy; it is computed in float32 anyway
    with torch.autocast(device_type=probability.device.type, enabled=False):
        return F.binary_cross_entropy(probability, mask.reshape(-1).float().to(probability.device), reduction="mean")


def activity_guided_boundary_losses(outputs: Any, scores: torch.Tensor, settings: LossSettings) -> dict[str, torch.Tensor]:
    """Start/end terms (official ``calc_bce_loss``): frame-level BCE plus 0.1 x the two level-0 proposal features'
    BCE against the masks sampled every ``mask_downsample`` frames. Returns the two terms and
    their six parts."""
    start_row, end_row = settings.mask_rows
    start_mask, end_mask = scores[:, start_row], scores[:, end_row]
    step = settings.mask_downsample
    parts = {
        "start_main": boundary_bce(outputs.start, start_mask),
        "end_main": boundary_bce(outputs.end, end_mask),
        "start_loc_prop": boundary_bce(outputs.start_loc_prop, start_mask[:, ::step]),
        "end_loc_prop": boundary_bce(outputs.end_loc_prop, end_mask[:, ::step]),
        "start_conf_prop": boundary_bce(outputs.start_conf_prop, start_mask[:, ::step]),
        "end_conf_prop": boundary_bce(outputs.end_conf_prop, end_mask[:, ::step]),
    }
    parts["start"] = parts["start_main"] + 0.1 * (parts["start_loc_prop"] + parts["start_conf_prop"])
    parts["end"] = parts["end_main"] + 0.1 * (parts["end_loc_prop"] + parts["end_conf_prop"])
    return parts


def consistency_triplets(
    features: Sequence[torch.Tensor],
    proposals: torch.Tensor,
    scales: Sequence[float] = (1.0, 4.0, 4.0),
    legacy_grad: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Anchor/positive/negative vectors of the consistency loss (official ``BDNet.forward`` with ``ssl``)
    for each feature map.

    ``features`` = (frame feature, level-0 loc boundary feature, level-0 conf boundary
    feature), each ``[1,Ch,T_m]``; ``proposals`` ``[3,2]`` frames = (first part of the split
    action, second part, inserted background). Returns per map ``(segments, anchor, positive,
    negative)``: the end-half feature at proposal 0's end, the start-half features at the
    starts of proposals 1 and 2.
    """
    from afsd_cli.model import boundary_regions
    from afsd_cli.ops import boundary_max_pool

    proposals = proposals.to(device=features[0].device, dtype=torch.float32).unsqueeze(0)
    frame_regions = boundary_regions(proposals[:, :, :1], proposals[:, :, 1:])  # [1,3,4]
    out = []
    for feature, scale in zip(features, scales):
        # divided, not re-rounded: the pooling op truncates (as BDNet.forward with ssl)
        segments = frame_regions / scale
        pooled = boundary_max_pool(feature.float().contiguous(), segments, legacy_grad=legacy_grad)
        half = pooled.shape[1] // 2
        out.append((segments, pooled[:, half:, 0], pooled[:, :half, 1], pooled[:, :half, 2]))
    return out


def consistency_loss(
    features: Sequence[torch.Tensor],
    proposals: torch.Tensor,
    scales: Sequence[float] = (1.0, 4.0, 4.0),
    weights: Sequence[float] = (1.0, 0.1, 0.1),
    legacy_grad: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Boundary-contrastive triplet loss of one consistency sample (``forward_one_epoch``), unweighted by
    ``ssl``.

    Returns the weighted sum over the three maps and the per-map triplet values.
    """
    levels = []
    for _, anchor, positive, negative in consistency_triplets(features, proposals, scales, legacy_grad):
        levels.append(F.triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2))
    total = sum(w * value for w, value in zip(weights, levels))
    return total, levels


# --------------------------------------------------------------------------------------------
# The whole objective of one step
# --------------------------------------------------------------------------------------------
def _segment_sums(outputs: Any, targets: SegmentTargets, settings: LossSettings, rows: slice) -> dict[str, torch.Tensor]:
    loc, conf = outputs.loc[rows], outputs.conf[rows]
    prop_loc, prop_conf, center = outputs.prop_loc[rows], outputs.prop_conf[rows], outputs.center[rows]
    loc_t, conf_t = targets.loc[rows], targets.conf[rows]
    prop_loc_t, prop_conf_t = targets.prop_loc[rows], targets.prop_conf[rows]
    positive = conf_t > 0
    prop_positive = prop_conf_t > 0
    count = positive.sum().clamp(min=1).float()
    prop_count = prop_positive.sum().clamp(min=1).float()
    alpha, gamma = settings.focal_alpha, settings.focal_gamma
    return {
        "loc": coarse_boundary_loss(loc, loc_t, positive) / count,
        "conf": coarse_classification_loss(conf, conf_t, alpha, gamma) / count,
        "prop_loc": refined_boundary_loss(prop_loc, prop_loc_t, prop_positive, settings.smooth_l1_refinement) / prop_count,
        "prop_conf": refined_classification_loss(prop_conf, prop_conf_t, alpha, gamma) / prop_count,
        "center": quality_loss(center, loc, prop_loc, loc_t, positive) / count,
    }


def detection_losses(
    outputs: Any,
    targets: Sequence[torch.Tensor],
    scores: torch.Tensor,
    settings: LossSettings,
    segment_targets: SegmentTargets | None = None,
) -> dict[str, torch.Tensor]:
    """Unweighted loc, conf, prop_loc, prop_conf, center, start, end terms of one batch.

    ``outputs``: the network output (attributes named as the official dict); ``targets[b]``
    ``[N_b,3]`` normalised ``(s, e, label)``; ``scores`` ``[B,2|3,T]`` boundary masks.
    """
    if segment_targets is None:
        segment_targets = build_targets(
            outputs.loc.detach().float(), outputs.priors, targets, settings.clip_length, settings.piou,
            settings.scale_ranges, settings.adaptive_piou,
        )
    batch = outputs.loc.shape[0]
    if settings.per_sample_normalisation:
        per_sample = [_segment_sums(outputs, segment_targets, settings, slice(b, b + 1)) for b in range(batch)]
        terms = {name: sum(s[name] for s in per_sample) / batch for name in per_sample[0]}
    else:
        terms = _segment_sums(outputs, segment_targets, settings, slice(None))
    boundary = activity_guided_boundary_losses(outputs, scores.to(outputs.start.device), settings)
    terms["start"], terms["end"] = boundary["start"], boundary["end"]
    return terms


def weighted_terms(terms: Mapping[str, torch.Tensor], settings: LossSettings) -> dict[str, torch.Tensor]:
    """Apply the weights of ``run_one_epoch``: ``lw`` to loc/prop_loc, ``cw`` to conf/prop_conf/center,
    ``ssl`` to the triplet term (when present); start/end unweighted."""
    factor = {"loc": settings.lw, "prop_loc": settings.lw, "conf": settings.cw, "prop_conf": settings.cw,
              "center": settings.cw, "start": 1.0, "end": 1.0, "trip": settings.ssl}
    return {name: value * factor[name] for name, value in terms.items()}


def weighted_total(terms: Mapping[str, torch.Tensor], settings: LossSettings) -> torch.Tensor:
    """The cost that is back-propagated: the sum of the weighted terms."""
    weighted = weighted_terms(terms, settings)
    order = [name for name in TERM_NAMES if name in weighted]
    total = weighted[order[0]]
    for name in order[1:]:
        total = total + weighted[name]
    return total
