"""One scenario over several seeds (``persona-sim run --seeds N``): what the seeds' run directories say together.

Per method, the mean and sample standard deviation over seeds of accuracy, of its difference from static
(taken seed by seed, so what the seeds share cancels), of the round trip and of the bytes per device
(seeds.json, seeds.md), and accuracy over virtual time as the seeds' mean with a ±1 std band
(accuracy-over-time-seeds.png; each seed's curve is put on one common time grid first).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from .plots import plt, save, style
from .verdict import eval_verdict, verdict_sentence

KEYS = ("ndcg@10", "hr@10", "auc", "rtt_ms_p50", "rtt_ms_p99", "bytes_per_device")
BANDS_PNG = "accuracy-over-time-seeds.png"


def _stats(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 6),
            "std": round(statistics.stdev(values), 6) if len(values) > 1 else 0.0, "n": len(values)}


def seed_summary(summaries: list[dict], seeds: list[int]) -> dict:
    return {"seeds": seeds, "verdict": eval_verdict(summaries, "ndcg@10"),
            "methods": {m: {k: _stats([s["methods"][m].get(k) for s in summaries]) for k in KEYS}
                        for m in summaries[0]["methods"]}}


def _pm(stat: dict | None, digits: int) -> str:
    if stat is None:
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _delta(v: dict | None) -> str:
    if v is None:
        return "–"
    return f"{v['delta']:+.4f}" + (f" ± {v['delta_std']:.4f}" if v.get("delta_std") is not None else "")


def render_seeds(data: dict) -> str:
    verdict = data.get("verdict") or {}
    lines = [verdict_sentence(data.get("verdict")), "",
             f"Mean ± sample std over seeds {', '.join(map(str, data['seeds']))}; Δ is taken seed by seed.", "",
             "| method | NDCG@10 | Δ NDCG@10 vs static | AUC | RTT p50 (ms) | RTT p99 (ms) | bytes / device |",
             "|---|---|---|---|---|---|---|"]
    for m, r in data["methods"].items():
        lines.append(f"| {m} | {_pm(r['ndcg@10'], 4)} | {_delta(verdict.get(m))} | "
                     f"{_pm(r['auc'], 4)} | {_pm(r['rtt_ms_p50'], 1)} | {_pm(r['rtt_ms_p99'], 1)} | "
                     f"{_pm(r['bytes_per_device'], 0)} |")
    return "\n".join(lines) + "\n"


def plot_seed_bands(summaries: list[dict], out: Path, title: str) -> str | None:
    series = [s.get("accuracy_over_time") or {} for s in summaries]
    if not all(s.get("t_s") for s in series):
        return None
    grid = np.linspace(max(s["t_s"][0] for s in series), min(s["t_s"][-1] for s in series), 40)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for method in series[0]["methods"]:
        curves = []
        for s in series:
            t, v = np.asarray(s["t_s"]), np.asarray([np.nan if x is None else x for x in s["methods"][method]])
            ok = ~np.isnan(v)
            curves.append(np.interp(grid, t[ok], v[ok]) if ok.sum() > 1 else np.full_like(grid, np.nan))
        curves = np.asarray(curves)
        mean, std = np.nanmean(curves, 0), np.nanstd(curves, 0, ddof=1) if len(curves) > 1 else 0 * grid
        st = style(method)
        ax.plot(grid, mean, label=method, **st)
        ax.fill_between(grid, mean - std, mean + std, color=st["color"], alpha=0.2, linewidth=0)
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("NDCG@10 (mean per bin)")
    ax.set_title(f"{title}: accuracy over virtual time, mean ± std over {len(summaries)} seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out, BANDS_PNG)


def write_seeds(out: Path, run_dirs: list[Path], seeds: list[int]) -> dict:
    summaries = [json.loads((d / "summary.json").read_text()) for d in run_dirs]
    data = seed_summary(summaries, seeds)
    data["runs"] = [str(d) for d in run_dirs]
    plot = plot_seed_bands(summaries, out, summaries[0].get("scenario", ""))
    (out / "seeds.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "seeds.md").write_text(f"# persona-sim: {summaries[0].get('scenario', '')} over {len(seeds)} seeds\n\n"
                                  + render_seeds(data) + (f"\n![accuracy over time, seed bands]({plot})\n" if plot else ""))
    return data
