"""PNG plots of a run, from its summary: accuracy over virtual time (shifts marked) and around shifts."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .config import Scenario  # noqa: E402

ACCURACY_PNG = "accuracy-over-time.png"
SHIFTS_PNG = "accuracy-around-shifts.png"


def plot_accuracy_over_time(summary: dict, scenario: Scenario, out: Path) -> str | None:
    series = summary.get("accuracy_over_time", {})
    if not series.get("t_s"):
        return None
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for method, values in series["methods"].items():
        ax.plot(series["t_s"], [float("nan") if v is None else v for v in values], label=method, marker=".")
    starts: dict[float, list[str]] = {}
    for d in scenario.drift:
        starts.setdefault(d.at_s, []).append(f"{d.kind} ({d.fraction:.0%})")
    for at_s, labels in starts.items():
        ax.axvline(at_s, color="grey", linestyle="--", linewidth=1)
        ax.annotate(" + ".join(labels), (at_s, 0.98), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=8, color="dimgrey")
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("NDCG@10 (mean per bin)")
    ax.set_title(f"{summary.get('scenario')}: accuracy over virtual time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / ACCURACY_PNG, dpi=110)
    plt.close(fig)
    return ACCURACY_PNG


def plot_around_shifts(summary: dict, out: Path) -> str | None:
    drift = summary.get("drift")
    if not drift:
        return None
    kinds = list(drift["recovery"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.4), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds):
        for method, rec in drift["recovery"][kind].items():
            c = rec["curve"]
            ax.plot(c["offsets"], [float("nan") if v is None else v for v in c["mean"]], label=method, marker=".")
        ax.axvline(-0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{kind} ({drift['shifts'][kind]['count']} shifts)")
        ax.set_xlabel("interactions since the shift")
    axes[0][0].set_ylabel("NDCG@10 (pooled)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / SHIFTS_PNG, dpi=110)
    plt.close(fig)
    return SHIFTS_PNG


def write_plots(summary: dict, scenario: Scenario, out: Path) -> list[str]:
    return [p for p in (plot_accuracy_over_time(summary, scenario, out), plot_around_shifts(summary, out)) if p]
