"""Target assignment for the AFSD losses (official ``MultiSegmentLoss.forward`` in
``AFSD/thumos14/multisegment_loss.py`` and ``AFSD/anet/``). Everything here runs without grad.

A prior (pyramid location) is positive for the *shortest* ground-truth segment that contains
its centre (ActivityNet additionally requires the larger distance to fall in the level's scale
range). The refinement stage is positive where the coarse prediction already overlaps its
target by at least ``piou``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

#: ActivityNet scale range per pyramid level, in frames of the 768-frame clip (``bounds`` in
#: ``AFSD/anet/multisegment_loss.py``).
ANET_SCALE_RANGES: tuple[tuple[float, float], ...] = (
    (0, 30), (15, 60), (30, 120), (60, 240), (96, 768), (256, 768),
)


class SegmentTargets(NamedTuple):
    """Per-prior targets for a batch: ``loc`` ``[B,K,2]`` distances in clip frames to the matched
    segment's start/end, ``conf`` ``[B,K]`` class ids (0 = background), ``prop_loc`` ``[B,K,2]``
    refinement offsets, ``prop_conf`` ``[B,K]`` refinement class ids."""

    loc: torch.Tensor
    conf: torch.Tensor
    prop_loc: torch.Tensor
    prop_conf: torch.Tensor


def segment_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of segments given as ``(left, right)`` distances from the same centre, ``[M,2]``."""
    eps = torch.finfo(torch.float32).eps
    inter = torch.min(pred[:, 0], target[:, 0]) + torch.min(pred[:, 1], target[:, 1])
    union = (target[:, 0] + target[:, 1]) + (pred[:, 0] + pred[:, 1]) - inter
    return inter / union.clamp(min=eps)


@torch.no_grad()
def match_priors(
    centres: torch.Tensor,
    truths: torch.Tensor,
    labels: torch.Tensor,
    clip_length: int,
    scale_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coarse targets for one sample (the first half of ``MultiSegmentLoss.forward``).

    ``centres`` ``[K]`` normalised prior centres, ``truths`` ``[N,2]`` normalised segments,
    ``labels`` ``[N]``. ``scale_bounds`` = per-prior ``(lower, upper)`` ``[K]`` for ActivityNet.
    Returns ``loc_t`` ``[K,2]`` (frames) and ``conf_t`` ``[K]`` (long).
    """
    num_priors, num_truths = centres.shape[0], truths.shape[0]
    if num_truths == 0:
        return centres.new_zeros(num_priors, 2), torch.zeros(num_priors, dtype=torch.long, device=centres.device)
    centre = centres.unsqueeze(1).expand(num_priors, num_truths)
    left = (centre - truths[:, 0].unsqueeze(0).expand(num_priors, num_truths)) * clip_length
    right = (truths[:, 1].unsqueeze(0).expand(num_priors, num_truths) - centre) * clip_length
    area = left + right
    outside = clip_length * 2
    area[left < 0] = outside
    area[right < 0] = outside
    if scale_bounds is not None:
        farthest = torch.max(left, right)
        lower, upper = scale_bounds
        area[farthest <= lower.unsqueeze(1)] = outside
        area[farthest > upper.unsqueeze(1)] = outside
    best_area, best = area.min(1)  # first minimum on ties: the lowest GT index
    loc_t = torch.stack(
        [(centres - truths[best, 0]) * clip_length, (truths[best, 1] - centres) * clip_length], dim=1
    )
    conf_t = labels[best].long()
    conf_t[best_area >= outside] = 0
    return loc_t, conf_t


@torch.no_grad()
def proposal_targets(
    pred_loc: torch.Tensor,
    loc_t: torch.Tensor,
    conf_t: torch.Tensor,
    piou: float,
    adaptive: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refinement targets for one sample (the proposal part of ``MultiSegmentLoss.forward``).

    ``prop_conf_t`` keeps the class where the coarse prediction's IoU with its target reaches
    ``piou`` (ActivityNet, ``adaptive``: ``min(piou, best positive IoU)`` so at least one prior
    stays positive); ``prop_loc_t`` is the remaining offset in units of half the predicted width.
    """
    iou = segment_iou(pred_loc, loc_t)
    threshold: float | torch.Tensor = piou
    if adaptive:
        positive = conf_t > 0
        best = iou[positive].max() if bool(positive.any()) else 2.0
        threshold = torch.clamp(torch.as_tensor(best, dtype=iou.dtype, device=iou.device), max=piou)
    prop_conf_t = conf_t.clone()
    prop_conf_t[iou < threshold] = 0
    half_width = 0.5 * (pred_loc[:, 0] + pred_loc[:, 1])
    prop_loc_t = torch.stack(
        [(loc_t[:, 0] - pred_loc[:, 0]) / half_width, (loc_t[:, 1] - pred_loc[:, 1]) / half_width], dim=1
    )
    return prop_loc_t, prop_conf_t


def prior_scale_bounds(
    prior_levels: torch.Tensor, scale_ranges: Sequence[tuple[float, float]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prior ``(lower, upper)`` scale bounds from each prior's pyramid level index."""
    table = torch.tensor(scale_ranges, dtype=torch.float32, device=prior_levels.device)
    levels = prior_levels.long()
    return table[levels, 0], table[levels, 1]


@torch.no_grad()
def build_targets(
    pred_loc: torch.Tensor,
    priors: torch.Tensor,
    targets: Sequence[torch.Tensor],
    clip_length: int,
    piou: float,
    scale_ranges: Sequence[tuple[float, float]] | None = None,
    adaptive_piou: bool = False,
) -> SegmentTargets:
    """Targets for a batch. ``pred_loc`` ``[B,K,2]``; ``priors`` ``[K,1]`` or ``[K,2]`` (centre,
    level) or with a leading batch dim; ``targets[b]`` ``[N_b,3]`` = ``(s/L, e/L, label)``."""
    if priors.dim() == 3:
        priors = priors[0]
    centres = priors[:, 0].to(pred_loc.dtype)
    bounds = None
    if scale_ranges is not None:
        if priors.shape[1] < 2:
            raise ValueError("scale ranges need the pyramid level of every prior (priors [K, 2])")
        bounds = prior_scale_bounds(priors[:, 1], scale_ranges)
    locs, confs, prop_locs, prop_confs = [], [], [], []
    for b, target in enumerate(targets):
        target = target.to(device=pred_loc.device, dtype=pred_loc.dtype)
        loc_t, conf_t = match_priors(centres, target[:, :2], target[:, 2], clip_length, bounds)
        prop_loc_t, prop_conf_t = proposal_targets(pred_loc[b].detach(), loc_t, conf_t, piou, adaptive_piou)
        locs.append(loc_t)
        confs.append(conf_t)
        prop_locs.append(prop_loc_t)
        prop_confs.append(prop_conf_t)
    return SegmentTargets(torch.stack(locs), torch.stack(confs), torch.stack(prop_locs), torch.stack(prop_confs))
