"""The verdict a reader wants first: what each adaptation method bought over the static model.

``run_verdict`` reads a run's summary (one seed): Δ of each method's metric against static's, with
its round trip and bytes per device. ``eval_verdict`` reads one variant of ``persona-sim eval``:
per seed, the paired difference method − static, then its mean and sample std over seeds; a gain is
called clear when the mean exceeds twice that std (and there are at least two seeds).
"""
from __future__ import annotations

import numpy as np

from ..methods import BASELINE


def run_verdict(methods: dict, metric: str = "ndcg@10") -> dict | None:
    base = methods.get(BASELINE)
    if base is None or base.get(metric) is None:
        return None
    out = {}
    for name, m in methods.items():
        if name == BASELINE or m.get(metric) is None:
            continue
        delta = m[metric] - base[metric]
        out[name] = {"metric": metric, "delta": round(delta, 6),
                     "relative": round(delta / base[metric], 6) if base[metric] else None,
                     "rtt_ms_p50": m.get("rtt_ms_p50"), "rtt_ms_p99": m.get("rtt_ms_p99"),
                     "bytes_per_device": m.get("bytes_per_device")}
    return out


def eval_verdict(per_seed: list[dict], metric: str = "ndcg@5") -> dict | None:
    if not per_seed or BASELINE not in per_seed[0]["methods"]:
        return None
    out = {}
    for name in per_seed[0]["methods"]:
        if name == BASELINE:
            continue
        deltas = np.asarray([r["methods"][name][metric] - r["methods"][BASELINE][metric] for r in per_seed])
        base = float(np.mean([r["methods"][BASELINE][metric] for r in per_seed]))
        std = float(np.std(deltas, ddof=1)) if len(deltas) > 1 else None
        out[name] = {"metric": metric, "delta": round(float(deltas.mean()), 6), "delta_std": None if std is None
                     else round(std, 6), "relative": round(float(deltas.mean()) / base, 6) if base else None,
                     "seeds": len(deltas), "clear_gain": bool(std is not None and deltas.mean() > 2 * std)}
    return out


def verdict_sentence(verdict: dict | None, labels: dict[str, str] | None = None) -> str:
    """One line in words: which methods beat static, by how much, and whether clearly."""
    if not verdict:
        return "No verdict: the run has no static baseline to compare with."
    labels = labels or {}
    metric = next(iter(verdict.values()))["metric"].upper()
    parts = []
    for name, v in verdict.items():
        rel = f" ({v['relative']:+.1%})" if v.get("relative") is not None else ""
        spread = f" ± {v['delta_std']:.4f}" if v.get("delta_std") is not None else ""
        clear = "" if "clear_gain" not in v or v["seeds"] < 2 else (
            ", beyond 2 std of the per-seed differences" if v["clear_gain"] else ", within 2 std (not clear)")
        parts.append(f"{labels.get(name, name)} {v['delta']:+.4f}{spread}{rel}{clear}")
    winners = [n for n, v in verdict.items() if v["delta"] > 0 and v.get("clear_gain", True)]
    head = (f"{', '.join(labels.get(n, n) for n in winners)} beat{'s' if len(winners) == 1 else ''} static"
            if winners else "No adaptation method beats static")
    return f"**{head}** on {metric}: " + "; ".join(parts) + "."
