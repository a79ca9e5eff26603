"""The embedded synthetic dataset: runs anywhere, needs no download.

Users hold a mixture of interests over item categories; item popularity inside
a category is long-tailed (Zipf); with probability ``habit`` a user's next item
is the habitual successor of the previous one (sequential structure a
recommender can learn). Everything is drawn from one seeded generator.
"""
from __future__ import annotations

import numpy as np

from .config import SyntheticSpec
from .dataset import Dataset


def generate(spec: SyntheticSpec, seed: int) -> Dataset:
    rng = np.random.default_rng([seed, 0x5EED])
    n_items, n_cat = spec.items, spec.categories
    # Item i (1-based) belongs to category cat[i]; categories have near-equal sizes.
    cat = np.concatenate([[0], rng.permutation(np.arange(n_items) % n_cat)])
    members = [np.flatnonzero(cat == c) for c in range(n_cat)]
    members = [m[m > 0] for m in members]
    # Zipf popularity within each category.
    pop = []
    for m in members:
        w = 1.0 / np.arange(1, len(m) + 1) ** spec.popularity_alpha
        pop.append(w / w.sum())
    # Each item's habitual successor: another item of the same category.
    successor = np.zeros(n_items + 1, dtype=np.int64)
    for m in members:
        successor[m] = rng.permutation(m)

    sequences = []
    k = min(spec.interests_per_user, n_cat)
    for _ in range(spec.users):
        interests = rng.choice(n_cat, size=k, replace=False)
        weights = rng.dirichlet(np.ones(k))
        length = int(rng.integers(spec.min_len, spec.max_len + 1))
        seq = np.empty(length, dtype=np.int64)
        prev = 0
        for t in range(length):
            if prev and rng.random() < spec.habit:
                seq[t] = successor[prev]
            else:
                c = interests[rng.choice(k, p=weights)]
                seq[t] = members[c][rng.choice(len(members[c]), p=pop[c])]
            prev = seq[t]
        sequences.append(seq)
    return Dataset("synthetic", n_items, sequences, cat)
