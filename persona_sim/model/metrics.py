"""Ranking metrics of one prediction event: the true item against sampled negatives.

rank = number of negatives scored strictly above the positive (0 is best).
HR@k = [rank < k]; NDCG@k = [rank < k] / log2(rank + 2);
AUC = fraction of negatives scored below the positive (ties count one half).
"""
from __future__ import annotations

import numpy as np

METRICS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10", "auc")
USER_METRICS = ("user_hr@5", "user_hr@10", "user_ndcg@5", "user_ndcg@10", "user_auc")


def rank_metrics(scores: np.ndarray) -> dict[str, np.ndarray]:
    """scores (N, 1 + K), column 0 the positive -> per-event metric arrays of length N."""
    scores = np.atleast_2d(scores)
    pos, neg = scores[:, :1], scores[:, 1:]
    above = (neg > pos).sum(1)
    ties = (neg == pos).sum(1)
    rank = above
    gain = 1.0 / np.log2(rank + 2.0)
    return {
        "rank": rank,
        "hr@5": (rank < 5).astype(np.float64),
        "hr@10": (rank < 10).astype(np.float64),
        "ndcg@5": np.where(rank < 5, gain, 0.0),
        "ndcg@10": np.where(rank < 10, gain, 0.0),
        "auc": (neg.shape[1] - above - ties + 0.5 * ties) / neg.shape[1],
    }


def user_metrics(users: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics per user over several positives, as the authors' code scores a user's real-time part.

    users (N,) the user of each event; scores (N, 1 + K), column 0 the event's positive. A user's positives
    and all their events' negatives are ranked together (ties go to positives, as in ``rank_metrics``):
    HR@k = any positive in the top k; NDCG@k = DCG@k / IDCG@k with IDCG over min(#positives, k) ideal
    hits; AUC = the fraction of (positive, negative) pairs with the positive above (ties one half).
    -> arrays over users in increasing user id.
    """
    order = np.argsort(users, kind="stable")
    _, starts = np.unique(users[order], return_index=True)
    discount = 1.0 / np.log2(np.arange(10) + 2.0)
    out = {name: np.empty(len(starts)) for name in USER_METRICS}
    for j, rows in enumerate(np.split(order, starts[1:])):
        pos, neg = scores[rows, 0], np.sort(scores[rows, 1:].ravel())
        values = np.concatenate([pos, neg])
        labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
        ranked = labels[np.lexsort((-labels, -values))]          # score descending, positives first on ties
        for k in (5, 10):
            out[f"user_hr@{k}"][j] = float(ranked[:k].any())
            out[f"user_ndcg@{k}"][j] = (ranked[:k] * discount[: len(ranked[:k])]).sum() / discount[: min(len(pos), k)].sum()
        below = np.searchsorted(neg, pos, side="left")
        ties = np.searchsorted(neg, pos, side="right") - below
        out["user_auc"][j] = (below + 0.5 * ties).sum() / (len(pos) * len(neg))
    return out


def _first_unique(values: np.ndarray) -> np.ndarray:
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


def sample_negatives(rng: np.random.Generator, num_items: int, exclude: np.ndarray, n: int, k: int) -> np.ndarray:
    """(n, k) item ids drawn uniformly from 1..num_items, none in ``exclude``, no repeats in a row.

    Rejection sampling (draw uniformly, drop excluded items and repeats, keep the
    first k) gives a uniform k-subset of the allowed items without building the
    allowed set, which is what makes 22k users' negatives take a second, not
    twenty. Mostly-excluded catalogues draw from the explicit allowed set.
    """
    excluded = np.zeros(num_items + 1, dtype=bool)
    excluded[0] = True
    excluded[np.asarray(exclude, dtype=np.int64)] = True
    free = num_items + 1 - int(excluded.sum())
    if free < k:
        raise ValueError(f"only {free} items outside the user's history, need {k} negatives")
    if free < 4 * k:
        allowed = np.flatnonzero(~excluded)
        return np.array([rng.choice(allowed, size=k, replace=False) for _ in range(n)], dtype=np.int64).reshape(n, k)
    state = rng.bit_generator.state
    draws = rng.integers(1, num_items + 1, size=(n, 2 * k))   # each row's first draw: the same stream as drawn
    keep = ~excluded[draws] & _first_in_row(draws)              # row by row below
    if (keep.sum(1) >= k).all():                                # the usual case: one draw per row is enough
        keep &= np.cumsum(keep, axis=1) <= k                    # each row's first k, in the order drawn
        return draws[keep].reshape(n, k)
    rng.bit_generator.state = state                             # some row draws again: row by row, same stream
    return rows_one_by_one(rng, excluded, n, k)


def rows_one_by_one(rng: np.random.Generator, excluded: np.ndarray, n: int, k: int) -> np.ndarray:
    """``sample_negatives`` row by row: each row draws 2k items at a time until k distinct allowed ones are in
    hand. ``excluded`` (num_items + 1,) marks the items (and 0) never drawn."""
    out = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        picked = np.empty(0, dtype=np.int64)
        while len(picked) < k:
            draw = rng.integers(1, len(excluded), size=2 * k)
            picked = _first_unique(np.concatenate([picked, draw[~excluded[draw]]]))
        out[i] = picked[:k]
    return out


def _first_in_row(values: np.ndarray) -> np.ndarray:
    """(n, m) non-negative -> (n, m) True where a value is its row's first occurrence of it."""
    n, m = values.shape
    keyed = (values + np.arange(n)[:, None] * (int(values.max(initial=0)) + 1)).ravel()   # distinct across rows
    first = np.zeros(n * m, dtype=bool)
    first[np.unique(keyed, return_index=True)[1]] = True        # return_index: the first of equal values
    return first.reshape(n, m)
