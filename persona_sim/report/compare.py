"""Runs side by side: ``persona-sim compare RUN_DIR …`` and the table a swept ``run`` ends with."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import NodeError

COLUMNS = ("ndcg@10", "auc", "rtt_ms_p50", "rtt_ms_p95", "rtt_ms_p99", "bytes_per_device",
           "bytes_down_per_adaptation")


def _summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    if not path.exists():
        raise NodeError(f"{run_dir}: no summary.json (is this a finished run directory?)")
    summary = json.loads(path.read_text())
    if "methods" not in summary or "variants" in summary:
        raise NodeError(f"{run_dir}: not a run directory (an eval directory? its report.md compares its variants)")
    return summary


def compare_runs(run_dirs: list[Path], labels: list[str] | None = None) -> dict:
    """One row per (run, method): accuracy, round trip, per-stage p50/p95, bytes, digest."""
    rows = []
    for i, run_dir in enumerate(run_dirs):
        s = _summary(run_dir)
        for method, m in s["methods"].items():
            row = {"run": labels[i] if labels else str(run_dir), "method": method, "seed": s.get("seed"),
                   "compute_mode": s.get("compute_mode"), "network": s.get("network"),
                   "digest": s.get("results_digest", "")[:12]}
            row.update({k: m.get(k) for k in COLUMNS})
            row["stages_ms"] = m.get("stages_ms", {})
            rows.append(row)
    return {"runs": [str(d) for d in run_dirs], "rows": rows}


def _f(v, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def render_compare(data: dict) -> str:
    """Accuracy, round trip and every stage's p50 / p95 / p99 (ms), one row per run and method."""
    stages = list(dict.fromkeys(st for r in data["rows"] for st in r["stages_ms"]))
    lines = ["| run | network | method | NDCG@10 | AUC | RTT (ms) | " + " | ".join(stages)
             + " | bytes / device | bytes down / adaptation | digest |", "|---" * (9 + len(stages)) + "|"]
    for r in data["rows"]:
        st = r["stages_ms"]
        cells = [" / ".join(_f(st[s][q], 1) for q in ("p50", "p95", "p99")) if s in st else "–" for s in stages]
        lines.append(f"| {r['run']} | {r.get('network') or '–'} | {r['method']} | {_f(r['ndcg@10'], 4)} | {_f(r['auc'], 4)} | "
                     f"{_f(r['rtt_ms_p50'], 1)} / {_f(r['rtt_ms_p95'], 1)} / {_f(r['rtt_ms_p99'], 1)} | "
                     + " | ".join(cells) + f" | {_f(r['bytes_per_device'], 0)} | "
                     f"{_f(r.get('bytes_down_per_adaptation'), 0)} | `{r['digest']}` |")
    return "\n".join(lines) + "\n"


def write_compare(out: Path, run_dirs: list[Path], labels: list[str]) -> dict:
    from .plots import plot_accuracy_vs_latency

    data = compare_runs(run_dirs, labels)
    points = [(r["run"], r["method"], r["rtt_ms_p50"], r["ndcg@10"]) for r in data["rows"]]
    plot = plot_accuracy_vs_latency(points, out, "accuracy against adaptation latency, per run")
    (out / "compare.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "compare.md").write_text("# persona-sim runs side by side\n\nRound trip and stages in virtual ms, "
                                    "p50 / p95 / p99.\n\n" + render_compare(data)
                                    + (f"\n![accuracy against adaptation latency]({plot})\n" if plot else ""))
    return data
