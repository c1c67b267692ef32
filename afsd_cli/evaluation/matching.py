"""Greedy matching of detections to ground truth, vectorised over (detection, instance) pairs.

The official evaluator visits detections in descending score order; each takes the unmatched
ground-truth instance (same video) with the highest tIoU, if that tIoU reaches the threshold.
That is sequential, but only detections with two or more candidate instances (tIoU >= thr)
can make a choice that depends on earlier ones. For a detection with exactly one candidate the
outcome is known once we know whether an earlier detection took that instance, so:

* single-candidate detections are resolved with array operations (the first of them per
  instance wins unless a multi-candidate detection locked it earlier);
* multi-candidate detections (rare) are walked in a short Python loop, each seeing an
  instance as taken if an earlier single-candidate detection wants it or an earlier
  multi-candidate detection took it.

The result is identical, detection by detection, to the sequential algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TIE_BREAKS = ("official", "stable")


def score_order(scores: np.ndarray, tie_break: str = "official") -> np.ndarray:
    """Indices of ``scores`` in the order detections are visited.

    ``official`` reverses NumPy's default (quicksort, not stable) ascending argsort, exactly as
    the official evaluator does, so equal scores come in the order that call yields on this
    NumPy build and CPU. ``stable``: descending score, equal scores in file order.
    """
    if tie_break == "official":
        return np.argsort(scores)[::-1]
    if tie_break == "stable":
        return np.argsort(-scores, kind="stable")
    raise ValueError(f"unknown tie_break {tie_break!r} (choose one of {TIE_BREAKS})")


def _visit_order(row: np.ndarray, tie_break: str) -> np.ndarray:
    """Order in which one detection visits the instances of its video (descending tIoU).

    NaN (a zero-length detection against a zero-length instance: 0/0) sorts last in the
    official ascending argsort, so it is visited first and passes every threshold; kept.
    """
    if tie_break == "official":
        return np.argsort(row)[::-1]
    return np.argsort(np.where(np.isnan(row), -np.inf, -row), kind="stable")


def segment_tiou(pred_start, pred_end, gt_start, gt_end, pred_length=None, gt_length=None) -> np.ndarray:
    """Element-wise tIoU with the official operation order (bit-identical results).

    ``inter = max(min(ends) - max(starts), 0)``; ``union = (len_gt + len_pred) - inter``.
    Lengths may be passed in when already computed (same values).
    """
    # Lengths of detections spanning most of the float range overflow to inf: tIoU 0, as there.
    with np.errstate(over="ignore"):
        intersection = np.minimum(pred_end, gt_end)
        intersection -= np.maximum(pred_start, gt_start)
        np.maximum(intersection, 0.0, out=intersection)  # what ndarray.clip(0) computes
        union = gt_end - gt_start if gt_length is None else gt_length.copy()
        union += pred_end - pred_start if pred_length is None else pred_length
        union -= intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        intersection /= union
    return intersection


def match_detections(
    pred_group: np.ndarray,
    pred_start: np.ndarray,
    pred_end: np.ndarray,
    gt_group: np.ndarray,
    gt_start: np.ndarray,
    gt_end: np.ndarray,
    thresholds: np.ndarray,
    tie_break: str = "official",
) -> np.ndarray:
    """True-positive flags ``[n_thresholds, n_pred]`` for detections already in visiting order.

    A *group* is one (class, video): detections only match instances of their own group.
    ``gt_*`` are in file order (the order the official code builds each video's tIoU row in);
    detections are sorted by class and, within a class, in visiting order, so a lower index is
    always an earlier visit among detections competing for the same instances.
    """
    n_pred, n_thr, n_gt = pred_group.shape[0], len(thresholds), gt_group.shape[0]
    tp = np.zeros((n_thr, n_pred), dtype=bool)
    if n_pred == 0 or n_gt == 0:
        return tp
    lowest = float(thresholds.min())
    instances = _sort_instances(gt_group, gt_start, gt_end)
    rank, known = _group_rank(instances.groups, pred_group)
    pairs = _overlapping_pairs(instances, rank, known, pred_start, pred_end, lowest)
    candidates = _threshold_candidates(pairs, thresholds, n_pred)
    claims = _single_claims(candidates, n_thr, n_pred, n_gt)
    rows = _Rows(rank, pred_start, pred_end, instances)
    locked = _walk_multi_candidates(tp, candidates, claims, pairs, rows, thresholds, tie_break)
    _award_single_claims(tp, claims, locked)
    return tp


@dataclass(frozen=True)
class _Instances:
    """Ground-truth instances sorted by (group, start); ``file_order`` lists each group's
    instances (as positions in this sorted order) in file order."""

    start: np.ndarray
    end: np.ndarray
    groups: np.ndarray  # the distinct groups, ascending
    group_first: np.ndarray  # slice of each group: group_first[r]:group_stop[r]
    group_stop: np.ndarray
    file_order: np.ndarray


@dataclass(frozen=True)
class _Pairs:
    """(detection, instance) pairs that can overlap with a tIoU reaching the lowest threshold,
    grouped by detection in visiting order."""

    pred: np.ndarray
    gt: np.ndarray  # position in the sorted instances
    tiou: np.ndarray


@dataclass(frozen=True)
class _Candidates:
    """(threshold, detection, instance) triples whose tIoU passes the threshold, threshold-major."""

    threshold: np.ndarray
    pred: np.ndarray
    gt: np.ndarray
    key: np.ndarray  # flat index into [n_thr, n_pred]
    count: np.ndarray  # candidates per (threshold, detection), [n_thr, n_pred]


@dataclass(frozen=True)
class _SingleClaims:
    """Candidates of single-candidate detections, and the earliest claimant of each instance."""

    key: np.ndarray  # flat index into [n_thr, n_pred]
    pred: np.ndarray
    gt_key: np.ndarray  # flat index into [n_thr, n_gt]
    first: np.ndarray  # [n_thr, n_gt] earliest single claimant (n_pred: none)


def _sort_instances(gt_group: np.ndarray, gt_start: np.ndarray, gt_end: np.ndarray) -> _Instances:
    n_gt = gt_group.shape[0]
    by_start = np.lexsort((gt_start, gt_group))
    sorted_group = gt_group[by_start]
    position = np.empty(n_gt, dtype=np.int64)
    position[by_start] = np.arange(n_gt)
    file_order = position[np.argsort(gt_group, kind="stable")]
    groups, group_first = np.unique(sorted_group, return_index=True)
    group_stop = np.append(group_first[1:], n_gt)
    return _Instances(gt_start[by_start], gt_end[by_start], groups, group_first, group_stop, file_order)


def _overlapping_pairs(instances: _Instances, rank: np.ndarray, known: np.ndarray, pred_start: np.ndarray,
                       pred_end: np.ndarray, lowest: float) -> _Pairs:
    """Every detection against the instances of its group that may overlap it; pairs below the
    lowest threshold never matter and are dropped. ``not (tiou < thr)`` rather than
    ``tiou >= thr`` throughout: NaN passes, as in the official code."""
    gs, ge = instances.start, instances.end
    lo = np.where(known, instances.group_first[rank], 0)
    hi = np.where(known, instances.group_stop[rank], 0)
    if lowest > 0:
        lo, hi = _overlap_window(rank, pred_start, pred_end, gs, ge, instances.group_first, lo, hi)
    count = hi - lo
    first_pair = np.cumsum(count) - count
    n_pairs = int(count.sum())
    pair_pred = np.repeat(np.arange(pred_start.shape[0]), count)
    pair_gt = np.repeat(lo - first_pair, count) + np.arange(n_pairs)
    with np.errstate(over="ignore"):
        pred_length = pred_end - pred_start
    tiou = segment_tiou(
        np.repeat(pred_start, count),
        np.repeat(pred_end, count),
        gs[pair_gt],
        ge[pair_gt],
        pred_length=np.repeat(pred_length, count),
        gt_length=(ge - gs)[pair_gt],
    )
    near = np.flatnonzero(~(tiou < lowest))
    return _Pairs(pair_pred[near], pair_gt[near], tiou[near])


def _threshold_candidates(pairs: _Pairs, thresholds: np.ndarray, n_pred: int) -> _Candidates:
    candidate = ~(pairs.tiou[None, :] < thresholds[:, None])
    cand_t, cand_pair = np.nonzero(candidate)  # threshold-major, pairs ascending inside
    cand_pred, cand_gt = pairs.pred[cand_pair], pairs.gt[cand_pair]
    cand_key = cand_t * n_pred + cand_pred
    count = np.bincount(cand_key, minlength=len(thresholds) * n_pred)
    return _Candidates(cand_t, cand_pred, cand_gt, cand_key, count.reshape(len(thresholds), n_pred))


def _single_claims(candidates: _Candidates, n_thr: int, n_pred: int, n_gt: int) -> _SingleClaims:
    """A single-candidate detection's outcome depends only on whether an earlier detection took
    its instance: the earliest single claimant wins it unless a multi-candidate one came first."""
    single = candidates.count.ravel()[candidates.key] == 1
    key, pred = candidates.key[single], candidates.pred[single]
    gt_key = (candidates.threshold * n_gt + candidates.gt)[single]
    first = np.full(n_thr * n_gt, n_pred, dtype=np.int64)
    np.minimum.at(first, gt_key, pred)
    return _SingleClaims(key, pred, gt_key, first.reshape(n_thr, n_gt))


def _walk_multi_candidates(tp: np.ndarray, candidates: _Candidates, claims: _SingleClaims, pairs: _Pairs,
                           rows: _Rows, thresholds: np.ndarray, tie_break: str) -> np.ndarray:
    """Multi-candidate detections (few), in visiting order: each takes its best free instance.

    Sets their flags in ``tp``; returns the instances they took, ``[n_thr, n_gt]``.
    """
    locked = np.zeros(claims.first.shape, dtype=bool)
    multi_t, multi_pred = np.nonzero(candidates.count >= 2)
    lowest = float(thresholds.min())
    visits = _multi_visits(np.unique(multi_pred), pairs.pred, pairs.gt, pairs.tiou, rows, lowest, tie_break)
    for t, p in zip(multi_t.tolist(), multi_pred.tolist()):
        threshold, taken, firsts = thresholds[t], locked[t], claims.first[t]
        for g, value in visits[p]:
            if value < threshold:
                break
            if taken[g] or firsts[g] < p:
                continue
            taken[g] = True
            tp[t, p] = True
            break
    return locked


def _award_single_claims(tp: np.ndarray, claims: _SingleClaims, locked: np.ndarray) -> None:
    wins = (claims.first.ravel()[claims.gt_key] == claims.pred) & ~locked.ravel()[claims.gt_key]
    tp.ravel()[claims.key[wins]] = True


def _group_rank(groups: np.ndarray, pred_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each detection's group in ``groups`` (sorted, unique) and whether it is there."""
    size = int(max(groups[-1], pred_group.max())) + 1
    if size <= 8 * (groups.size + pred_group.size):  # a lookup table is cheaper than a search
        table = np.full(size, -1, dtype=np.int64)
        table[groups] = np.arange(groups.size)
        rank = table[pred_group]
        return np.maximum(rank, 0), rank >= 0
    rank = np.minimum(np.searchsorted(groups, pred_group), groups.size - 1)
    return rank, groups[rank] == pred_group


def _overlap_window(rank, pred_start, pred_end, gs, ge, group_first, lo, hi):
    """Narrow each detection's range of instances to those that can overlap it.

    With instances sorted by start inside a group, an overlapping instance starts before the
    detection ends and after ``detection start - longest instance of the group``. Searching
    all groups at once uses the key ``group_rank * span + start``; the window is widened by a
    margin far above that key's rounding, so it never loses an overlapping instance (exact
    tIoUs decide afterwards). Zero-length detections keep their whole group: against a
    zero-length instance their tIoU is 0/0, which the official comparison lets through.
    """
    n_groups = group_first.size
    longest = np.maximum.reduceat(ge - gs, group_first)
    # From the instances only: detection ends may lie far past the video (even near the float
    # maximum), and a query beyond its group's band is clipped to the group below anyway.
    span = 2.0 * (float(ge.max()) + float(longest.max())) + 2.0
    margin = 1e-9 * (n_groups + 1) * span
    gt_rank = np.repeat(np.arange(n_groups), np.diff(np.append(group_first, gs.size)))
    key = gt_rank * span + gs
    # Searching costs more than it saves for small groups: only narrow the larger ones.
    narrow = np.flatnonzero((hi - lo > 8) & (pred_end > pred_start))
    base = rank[narrow] * span
    w_lo = np.searchsorted(key, base + (pred_start[narrow] - longest[rank[narrow]]) - margin, side="left")
    w_hi = np.searchsorted(key, base + pred_end[narrow] + margin, side="right")
    lo, hi = lo.copy(), hi.copy()
    lo[narrow], hi[narrow] = np.clip(w_lo, lo[narrow], hi[narrow]), np.clip(w_hi, lo[narrow], hi[narrow])
    return lo, hi


class _Rows:
    """What is needed to rebuild one detection's full tIoU row in the official (file) order."""

    def __init__(self, rank: np.ndarray, pred_start: np.ndarray, pred_end: np.ndarray, instances: _Instances):
        self.rank, self.pred_start, self.pred_end, self.instances = rank, pred_start, pred_end, instances

    def __call__(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance ids of detection ``p``'s group in file order, and their tIoUs with it."""
        r, instances = self.rank[p], self.instances
        ids = instances.file_order[instances.group_first[r] : instances.group_stop[r]]
        return ids, segment_tiou(self.pred_start[p], self.pred_end[p], instances.start[ids], instances.end[ids])


def _multi_visits(multi, near_pred, near_gt, near_tiou, rows: _Rows, lowest: float, tie_break: str):
    """For each detection in ``multi``: the instances it visits, in order, down to the lowest
    threshold, as ``[(instance, tIoU), ...]``.

    Visiting is by descending tIoU; only equal tIoUs need the official tie order (that of
    NumPy's argsort over the detection's whole row), so only those rows are rebuilt.
    """
    is_multi = np.zeros(int(near_pred.max(initial=-1)) + 1, dtype=bool)
    is_multi[multi] = True
    keep = is_multi[near_pred]
    mp, mg, mv = near_pred[keep], near_gt[keep], near_tiou[keep]
    order = np.lexsort((-mv, mp))  # by detection, then descending tIoU (NaN last here)
    mp, mg, mv = mp[order], mg[order], mv[order]
    same = (mp[1:] == mp[:-1]) & ((mv[1:] == mv[:-1]) | np.isnan(mv[1:]) | np.isnan(mv[:-1]))
    needs_row = set(mp[1:][same].tolist())
    visits: dict[int, list[tuple[int, float]]] = {}
    for p, g, v in zip(mp.tolist(), mg.tolist(), mv.tolist()):
        if p not in needs_row:
            visits.setdefault(p, []).append((g, v))
    for p in needs_row:
        ids, row = rows(p)
        visits[p] = []
        for j in _visit_order(row, tie_break).tolist():
            value = float(row[j])
            if value < lowest:
                break  # the visit stops here at every threshold
            visits[p].append((int(ids[j]), value))
    return visits
