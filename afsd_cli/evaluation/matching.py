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

    # Instances sorted by (group, start); `file_order` lists each group's instances in file order.
    by_start = np.lexsort((gt_start, gt_group))
    gg, gs, ge = gt_group[by_start], gt_start[by_start], gt_end[by_start]
    position = np.empty(n_gt, dtype=np.int64)
    position[by_start] = np.arange(n_gt)
    file_order = position[np.argsort(gt_group, kind="stable")]
    groups, group_first = np.unique(gg, return_index=True)
    group_stop = np.append(group_first[1:], n_gt)

    rank, known = _group_rank(groups, pred_group)
    lo = np.where(known, group_first[rank], 0)
    hi = np.where(known, group_stop[rank], 0)
    if lowest > 0:
        lo, hi = _overlap_window(rank, pred_start, pred_end, gs, ge, group_first, lo, hi)

    # (detection, instance) pairs that can overlap, grouped by detection in visiting order.
    count = hi - lo
    first_pair = np.cumsum(count) - count
    n_pairs = int(count.sum())
    pair_pred = np.repeat(np.arange(n_pred), count)
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

    # `not (tiou < thr)` rather than `tiou >= thr`: NaN passes, as in the official code.
    # Pairs below the lowest threshold never matter: drop them first.
    near = np.flatnonzero(~(tiou < lowest))
    candidate = ~(tiou[near][None, :] < thresholds[:, None])
    cand_t, cand_near = np.nonzero(candidate)  # threshold-major, pairs ascending inside
    cand_pair = near[cand_near]
    cand_pred, cand_gt = pair_pred[cand_pair], pair_gt[cand_pair]
    cand_key = cand_t * n_pred + cand_pred  # flat index into [n_thr, n_pred]
    n_cand = np.bincount(cand_key, minlength=n_thr * n_pred)

    # Single-candidate detections: the earliest claimant of an instance wins it, unless a
    # multi-candidate detection visited earlier took it.
    single = n_cand[cand_key] == 1
    s_key, s_pred, s_gt_key = cand_key[single], cand_pred[single], (cand_t * n_gt + cand_gt)[single]
    first_single = np.full(n_thr * n_gt, n_pred, dtype=np.int64)
    np.minimum.at(first_single, s_gt_key, s_pred)
    first_single = first_single.reshape(n_thr, n_gt)
    n_cand = n_cand.reshape(n_thr, n_pred)

    # Multi-candidate detections (few): walk them in visiting order.
    locked = np.zeros((n_thr, n_gt), dtype=bool)
    multi_t, multi_pred = np.nonzero(n_cand >= 2)
    rows = _Rows(rank, pred_start, pred_end, gs, ge, group_first, group_stop, file_order)
    visits = _multi_visits(np.unique(multi_pred), pair_pred[near], pair_gt[near], tiou[near], rows, lowest, tie_break)
    for t, p in zip(multi_t.tolist(), multi_pred.tolist()):
        threshold, taken, firsts = thresholds[t], locked[t], first_single[t]
        for g, value in visits[p]:
            if value < threshold:
                break
            if taken[g] or firsts[g] < p:
                continue
            taken[g] = True
            tp[t, p] = True
            break

    wins = (first_single.ravel()[s_gt_key] == s_pred) & ~locked.ravel()[s_gt_key]
    tp.ravel()[s_key[wins]] = True
    return tp


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

    def __init__(self, rank, pred_start, pred_end, gs, ge, group_first, group_stop, file_order):
        self.rank, self.pred_start, self.pred_end = rank, pred_start, pred_end
        self.gs, self.ge = gs, ge
        self.group_first, self.group_stop, self.file_order = group_first, group_stop, file_order

    def __call__(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance ids of detection ``p``'s group in file order, and their tIoUs with it."""
        r = self.rank[p]
        ids = self.file_order[self.group_first[r] : self.group_stop[r]]
        return ids, segment_tiou(self.pred_start[p], self.pred_end[p], self.gs[ids], self.ge[ids])


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
