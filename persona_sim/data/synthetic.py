"""The embedded synthetic dataset: runs anywhere, needs no download, scales to millions of users.

Users hold a mixture of interests over item categories (1..C); item popularity
inside a category is long-tailed (Zipf); with probability ``habit`` a user's
next item is the habitual successor of the previous one (sequential structure a
recommender can learn). Generation is vectorised over blocks of users and step
by step over positions, so memory is the output (8 bytes per interaction) plus
one block; everything is drawn from one seeded generator in a fixed block order.
"""
from __future__ import annotations

import numpy as np

from ..scenario.schema import SyntheticSpec
from .sequences import Dataset, Sequences

BLOCK = 16384   # users generated together; part of the definition of the stream (do not change lightly)


def _category_tables(spec: SyntheticSpec, rng: np.random.Generator):
    n_items, n_cat = spec.items, spec.categories
    cat = np.concatenate([[0], rng.permutation(np.arange(n_items) % n_cat) + 1])   # item -> category 1..C
    members = [np.flatnonzero(cat == c) for c in range(1, n_cat + 1)]
    width = max(len(m) for m in members)
    member_table = np.zeros((n_cat, width), dtype=np.int64)
    cdf = np.ones((n_cat, width))                      # padded with 1.0: never chosen
    successor = np.zeros(n_items + 1, dtype=np.int64)
    for c, m in enumerate(members):
        member_table[c, : len(m)] = m
        w = 1.0 / np.arange(1, len(m) + 1) ** spec.popularity_alpha
        cdf[c, : len(m)] = np.cumsum(w / w.sum())
        cdf[c, len(m) - 1:] = 1.0
        successor[m] = rng.permutation(m)              # each item's habitual successor, same category
    return cat, member_table, cdf, successor


def _block(spec: SyntheticSpec, rng: np.random.Generator, n: int, tables) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of n users as (flat items, lengths)."""
    _, member_table, cdf, successor = tables
    n_cat, width = cdf.shape
    k = min(spec.interests_per_user, n_cat)
    interests = np.argsort(rng.random((n, n_cat)), axis=1)[:, :k]          # (n, k) distinct categories
    weights = np.cumsum(rng.dirichlet(np.ones(k), size=n), axis=1)          # (n, k) cumulative mixture
    lengths = rng.integers(spec.min_len, spec.max_len + 1, size=n)
    flat_cdf = (cdf + np.arange(n_cat)[:, None]).ravel()                    # row c shifted by c: one searchsorted
    out = np.zeros((n, spec.max_len), dtype=np.int64)
    rows = np.arange(n)
    for t in range(spec.max_len):
        pick = np.minimum((weights < rng.random(n)[:, None]).sum(axis=1), k - 1)
        c = interests[rows, pick]                                          # (n,) chosen category
        rank = np.searchsorted(flat_cdf, c + rng.random(n), side="right") - c * width
        drawn = member_table[c, rank]
        habit = rng.random(n) < spec.habit
        out[:, t] = np.where(habit & (t > 0), successor[out[:, t - 1]], drawn) if t else drawn
    keep = np.arange(spec.max_len)[None, :] < lengths[:, None]
    return out[keep], lengths


def generate(spec: SyntheticSpec, seed: int) -> Dataset:
    rng = np.random.default_rng([seed, 0x5EED])
    tables = _category_tables(spec, rng)
    flats, lengths = [], []
    for start in range(0, spec.users, BLOCK):
        flat, lens = _block(spec, rng, min(BLOCK, spec.users - start), tables)
        flats.append(flat)
        lengths.append(lens)
    lengths_all = np.concatenate(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths_all)]).astype(np.int64)
    return Dataset("synthetic", spec.items, Sequences(np.concatenate(flats), offsets), tables[0])
