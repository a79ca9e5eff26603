"""Exact values of the ranking metrics and the link model."""
from __future__ import annotations

import math

import numpy as np
import pytest

from persona_sim.model.metrics import rank_metrics, sample_negatives
from persona_sim.scenario.schema import NetworkSpec
from persona_sim.sim.netsim import device_link


def test_positive_ranked_first():
    m = rank_metrics(np.array([[5.0, 1.0, 2.0, 3.0]]))
    assert m["rank"][0] == 0
    assert (m["hr@5"][0], m["ndcg@5"][0], m["ndcg@10"][0], m["auc"][0]) == (1.0, 1.0, 1.0, 1.0)


def test_positive_ranked_fourth():
    m = rank_metrics(np.array([[1.0, 2.0, 3.0, 4.0, 0.0, -1.0]]))   # three negatives above
    assert m["rank"][0] == 3
    assert m["ndcg@5"][0] == pytest.approx(1 / math.log2(5))
    assert m["auc"][0] == pytest.approx(2 / 5)


def test_positive_outside_top_five():
    scores = np.array([[0.0] + [1.0] * 7 + [-1.0] * 3])
    m = rank_metrics(scores)
    assert (m["hr@5"][0], m["hr@10"][0], m["ndcg@5"][0]) == (0.0, 1.0, 0.0)
    assert m["ndcg@10"][0] == pytest.approx(1 / math.log2(9))


def test_ties_count_half_in_auc_and_do_not_lower_the_rank():
    m = rank_metrics(np.array([[1.0, 1.0, 0.0]]))
    assert m["rank"][0] == 0
    assert m["auc"][0] == pytest.approx(0.75)


def test_negatives_avoid_the_history_and_repeat_per_seed():
    history = np.arange(1, 51)
    a = sample_negatives(np.random.default_rng(1), 100, history, 5, 20)
    b = sample_negatives(np.random.default_rng(1), 100, history, 5, 20)
    assert (a == b).all()
    assert a.min() > 50 and a.max() <= 100
    assert all(len(set(row)) == 20 for row in a)


def _row_by_row(rng, num_items, exclude, n, k):
    """sample_negatives as first written: each row draws 2k until k distinct allowed items are in hand."""
    excluded = np.zeros(num_items + 1, dtype=bool)
    excluded[[0, *exclude]] = True
    out = []
    for _ in range(n):
        picked = []
        while len(picked) < k:
            for item in rng.integers(1, num_items + 1, size=2 * k).tolist():
                if not excluded[item] and item not in picked:
                    picked.append(item)
        out.append(picked[:k])
    return np.asarray(out, dtype=np.int64).reshape(n, k)


@pytest.mark.parametrize("num_items, excluded, n, k", [(1000, 30, 27, 99), (12000, 300, 40, 99),
                                                       (25, 5, 50, 5)])   # the last: some rows draw twice
def test_negatives_drawn_for_all_rows_at_once_equal_those_drawn_row_by_row(num_items, excluded, n, k):
    """The same items and the same generator state afterwards as the row-by-row rejection sampling."""
    for seed in range(20):
        exclude = np.random.default_rng(seed).choice(np.arange(1, num_items + 1), excluded, replace=False)
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        assert np.array_equal(sample_negatives(a, num_items, exclude, n, k), _row_by_row(b, num_items, exclude, n, k))
        assert a.bit_generator.state == b.bit_generator.state


def _link(**kw):
    return device_link(NetworkSpec(**kw), seed=0, index=0)


def test_transfer_time_is_delay_plus_serialisation():
    link = _link(uplink_mbps=8, downlink_mbps=16, delay_ms=10, jitter_ms=0)
    rng = np.random.default_rng(0)
    assert link.propagation_us(rng) + link.tx_us(1000, True, 0) == 10_000 + 1000     # 8000 bits at 8 Mbit/s = 1 ms
    assert link.tx_us(1000, False, 0) == 500
    assert link.tx_us(1, True, 0) == 1                                             # rounded up to whole µs


def test_jitter_stays_in_its_range_and_is_seeded():
    link = _link(uplink_mbps=8, downlink_mbps=8, delay_ms=10, jitter_ms=2)
    times = [link.propagation_us(np.random.default_rng(s)) for s in range(200)]
    assert min(times) >= 10_000 and max(times) <= 12_000 and len(set(times)) > 50
    assert link.propagation_us(np.random.default_rng(7)) == link.propagation_us(np.random.default_rng(7))
