"""Plots of a run, from its summary and results.sqlite: accuracy over virtual time (shifts marked) and
around shifts, the round-trip CDF, bytes per device, and prototype assignment over time. Each is a PNG
(embedded in report.html) with an SVG beside it; a method keeps one colour and line style in every plot."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..methods import METHODS  # noqa: E402
from ..scenario.schema import Scenario  # noqa: E402
from .recovery import time_edges  # noqa: E402

PALETTE = plt.get_cmap("tab10").colors
DASHES = ("-", "--", "-.", ":")


def style(method: str) -> dict:
    """The colour and line style of ``method`` in every plot (by its place in the registry)."""
    order = list(METHODS)
    i = order.index(method) if method in order else len(order) + sum(map(ord, method))
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": DASHES[i % len(DASHES)]}


def save(fig, out: Path, name: str) -> str:
    """``name`` (a .png, 110 dpi) and the same figure as .svg beside it; returns ``name``."""
    fig.savefig(out / name, dpi=110)
    fig.savefig(out / name.replace(".png", ".svg"))
    plt.close(fig)
    return name


ACCURACY_PNG = "accuracy-over-time.png"
SHIFTS_PNG = "accuracy-around-shifts.png"


def plot_accuracy_over_time(summary: dict, scenario: Scenario, out: Path) -> str | None:
    series = summary.get("accuracy_over_time", {})
    if not series.get("t_s"):
        return None
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for method, values in series["methods"].items():
        ax.plot(series["t_s"], [float("nan") if v is None else v for v in values], label=method, marker=".",
                **style(method))
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
    return save(fig, out, ACCURACY_PNG)


def plot_around_shifts(summary: dict, out: Path) -> str | None:
    drift = summary.get("drift")
    if not drift:
        return None
    kinds = list(drift["recovery"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.4), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds):
        for method, rec in drift["recovery"][kind].items():
            c = rec["curve"]
            ax.plot(c["offsets"], [float("nan") if v is None else v for v in c["mean"]], label=method, marker=".",
                    **style(method))
        ax.axvline(-0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{kind} ({drift['shifts'][kind]['count']} shifts)")
        ax.set_xlabel("interactions since the shift")
    axes[0][0].set_ylabel("NDCG@10 (pooled)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("accuracy around injected shifts")
    fig.tight_layout()
    return save(fig, out, SHIFTS_PNG)


RTT_PNG = "rtt-cdf.png"
PROTOTYPES_PNG = "prototypes-over-time.png"
BYTES_PNG = "bytes-per-device.png"


def plot_rtt_cdf(con: sqlite3.Connection, out: Path) -> str | None:
    rows = con.execute("SELECT method, applied_us - issued_us FROM adaptations WHERE status='ok'").fetchall()
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for method in sorted({m for m, _ in rows}):
        rtt = np.sort([r / 1000 for m, r in rows if m == method])
        ax.plot(rtt, np.arange(1, len(rtt) + 1) / len(rtt), label=method, **style(method))
    spread = max(r for _, r in rows) / max(1, min(r for _, r in rows))
    if spread > 20:                                  # slow links and queues: a long tail reads better on a log axis
        ax.set_xscale("log")
    ax.set_xlabel("round trip, request issued to edit applied (ms, virtual)")
    ax.set_ylabel("fraction of adaptations")
    ax.set_title("round trip per adaptation (CDF)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out, RTT_PNG)


def plot_prototypes(con: sqlite3.Connection, out: Path, bins: int = 30) -> str | None:
    """Share of each prototype among the edits applied per virtual-time bin (Persona (m)'s assignment)."""
    present = {m for (m,) in con.execute("SELECT DISTINCT method FROM adaptations WHERE status='ok'")}
    method = next((m for m, spec in METHODS.items() if spec.uses_groups and m in present), None)
    if method is None:
        return None
    rows = np.asarray(con.execute("SELECT applied_us, prototype_id FROM adaptations WHERE status='ok' AND method=?",
                                  (method,)).fetchall(), dtype=np.float64).reshape(-1, 2)
    edges = time_edges(rows[:, 0], bins)
    which = np.clip(np.searchsorted(edges, rows[:, 0], side="right") - 1, 0, bins - 1)
    protos = rows[:, 1].astype(int)
    counts = np.zeros((protos.max() + 1, bins))
    np.add.at(counts, (protos, which), 1)
    shares = counts / np.maximum(counts.sum(0), 1)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.stackplot((edges[:-1] + edges[1:]) / 2e6, shares, labels=[f"prototype {p}" for p in range(len(shares))])
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel(f"share of {method}'s edits")
    ax.set_ylim(0, 1)
    ax.set_title(f"{method}: prototype assignment over time")
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    return save(fig, out, PROTOTYPES_PNG)


def plot_bytes_per_device(con: sqlite3.Connection, out: Path) -> str | None:
    rows = con.execute("SELECT method, device_id, SUM(bytes_up + bytes_down) FROM adaptations "
                       "GROUP BY method, device_id").fetchall()
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for method in sorted({m for m, _, _ in rows}):
        ax.hist([b / 1024 for m, _, b in rows if m == method], bins=30, alpha=0.6, label=method,
                color=style(method)["color"])
    ax.set_xlabel("bytes per device, up + down (KiB)")
    ax.set_ylabel("devices")
    ax.set_title("bytes per device")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out, BYTES_PNG)


TRADEOFF_PNG = "accuracy-vs-latency.png"
MARKERS = "osD^v<>px*"


def plot_accuracy_vs_latency(points: list[tuple[str, str, float | None, float]], out: Path,
                             title: str) -> str | None:
    """One point per (run, method): the adaptation's round trip p50 (issued to applied; log scale when it spans
    more than a decade) against
    NDCG@10; a method that never adapts is a horizontal line. ``points``: (run label, method, ms, ndcg@10)."""
    if not any(ms for _, _, ms, _ in points):
        return None
    runs = list(dict.fromkeys(r for r, _, _, _ in points))
    fig, ax = plt.subplots(figsize=(7, 4))
    for run, method, ms, ndcg in points:
        label = method if len(runs) == 1 else f"{method} ({run})"
        if ms:
            ax.scatter([ms], [ndcg], color=style(method)["color"], marker=MARKERS[runs.index(run) % len(MARKERS)],
                       label=label, zorder=3)
            ax.annotate(method, (ms, ndcg), textcoords="offset points", xytext=(5, 4), fontsize=7)
        else:
            ax.axhline(ndcg, color=style(method)["color"], linestyle=":", linewidth=1, label=f"{label}: no adaptation")
    latencies = [ms for _, _, ms, _ in points if ms]
    wide = max(latencies) > 10 * min(latencies)    # ms to seconds (on-device training): a log axis
    if wide:
        ax.set_xscale("log")
    else:                                          # a narrow range on a log axis gets unreadable ticks
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)
        lo, hi = min(latencies), max(latencies)
        pad = max(0.05 * (hi - lo), 0.02 * hi)
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel("adaptation latency p50, issued to applied (virtual ms" + (", log scale)" if wide else ")"))
    ax.set_ylabel("NDCG@10")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save(fig, out, TRADEOFF_PNG)


def write_plots(summary: dict, scenario: Scenario, out: Path) -> list[str]:
    """Every plot this run has data for; returns the file names (in out)."""
    points = [("", name, m["rtt_ms_p50"], m["ndcg@10"]) for name, m in summary["methods"].items()]
    made = [plot_accuracy_over_time(summary, scenario, out), plot_around_shifts(summary, out),
            plot_accuracy_vs_latency(points, out, f"{summary.get('scenario')}: what adapting costs and buys")]
    con = sqlite3.connect(out / "results.sqlite")
    try:
        made += [plot_rtt_cdf(con, out), plot_bytes_per_device(con, out), plot_prototypes(con, out)]
    finally:
        con.close()
    return [p for p in made if p]
