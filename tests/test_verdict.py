"""The verdict: each method's gain over static, and whether it is clear over seeds."""
from __future__ import annotations

import pytest

from persona_sim.report.verdict import eval_verdict, run_verdict, verdict_sentence


def _seed(static, s, m):
    return {"methods": {"static": {"ndcg@5": static}, "persona-s": {"ndcg@5": s}, "persona-m": {"ndcg@5": m}}}


def test_eval_verdict_pairs_seeds_and_calls_a_gain_clear_beyond_two_std():
    per_seed = [_seed(0.20, 0.21, 0.200), _seed(0.22, 0.231, 0.225), _seed(0.21, 0.219, 0.205)]
    v = eval_verdict(per_seed)
    assert v["persona-s"]["delta"] == pytest.approx(0.01) and v["persona-s"]["delta_std"] == pytest.approx(0.001)
    assert v["persona-s"]["clear_gain"] is True
    assert v["persona-m"]["delta"] == pytest.approx(0.0) and v["persona-m"]["clear_gain"] is False
    text = verdict_sentence(v, {"persona-s": "Persona (s)", "persona-m": "Persona (m)"})
    assert text.startswith("**Persona (s) beats static** on NDCG@5")
    assert "Persona (s) +0.0100 ± 0.0010 (+4.8%), beyond 2 std" in text and "within 2 std (not clear)" in text


def test_one_seed_is_never_a_clear_gain():
    v = eval_verdict([_seed(0.2, 0.3, 0.1)])
    assert v["persona-s"]["clear_gain"] is False and v["persona-s"]["delta_std"] is None
    assert "No adaptation method beats static" in verdict_sentence(v)


def test_run_verdict_is_the_difference_to_static_with_cost():
    methods = {"static": {"ndcg@10": 0.5, "rtt_ms_p50": None}, "persona-s": {"ndcg@10": 0.45, "rtt_ms_p50": 40.0,
                                                                         "rtt_ms_p99": 60.0, "bytes_per_device": 10.0}}
    v = run_verdict(methods)
    assert v == {"persona-s": {"metric": "ndcg@10", "delta": -0.05, "relative": -0.1, "rtt_ms_p50": 40.0,
                               "rtt_ms_p99": 60.0, "bytes_per_device": 10.0}}
    assert verdict_sentence(v).startswith("**No adaptation method beats static** on NDCG@10")
    assert run_verdict({"persona-s": {"ndcg@10": 0.4}}) is None
