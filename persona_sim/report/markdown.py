"""report.md: the run's summary as tables a person reads."""
from __future__ import annotations

from .summary import STAGES
from .verdict import verdict_sentence


def _f(v, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _size(n: int) -> str:
    """Bytes as KiB, or MiB from 10 MiB on."""
    return f"{n / 2**20:.1f} MiB" if n >= 10 * 2**20 else f"{n / 1024:.1f} KiB"


def _drift_lines(drift: dict) -> list[str]:
    lines = ["", "## Distribution shifts and recovery", "",
             "Injected: " + ", ".join(f"{k} ×{v['count']} on {v['devices']} devices" for k, v in drift["shifts"].items())
             + " (a device whose stream ends before a shift's `at_s` is not shifted)"
             + f". NDCG@10 pooled over shifts: *before* = the {drift['pre_events']} interactions before a shift, "
             f"*after* = the first {drift['window_events']} from it; *recovery* = interactions (and median virtual "
             f"seconds) until a {drift['window_events']}-interaction mean is back within "
             f"{drift['tolerance']:.0%} of *before* (– : not within {drift['horizon_events']}).", "",
             "| shift | method | before | after | dip | recovery (interactions) | recovery (s) |",
             "|---|---|---|---|---|---|---|"]
    for kind, methods in drift["recovery"].items():
        for name, r in methods.items():
            rec = "–" if r["recovery_events"] is None else str(r["recovery_events"])
            secs = "–" if r["recovery_s"] is None else f"{r['recovery_s']:.1f}"
            lines.append(f"| {kind} | {name} | {_f(r['before'])} | {_f(r['after'])} | {_f(r['dip'])} | {rec} | {secs} |")
    return lines


WALL_PARTS = {"serialization": "encode the report, decode the reply (the node)",
              "transport": "sockets, gRPC and scheduling (the rest)",
              "cloud": "validate, compute the edits, run the cloud's clock",
              "shard_wait": "wait for the other shards' reports", "round": "whole round"}


def _wall_lines(summary: dict) -> list[str]:
    wall = summary.get("wall_clock", {})
    lines = ["", "## Wall clock of the real path (measured, not simulated)", "",
             f"- run wall time {_f(summary.get('wall_seconds'), 1)} s over transport **{summary.get('transport')}**; "
             f"the real computation of one edit, p50 {_f(wall.get('cloud_compute_ms_p50'), 3)} ms"]
    rounds = wall.get("rounds") or {}
    if rounds.get("count"):
        lines += [f"- {rounds['count']} lockstep rounds, {rounds['requests_per_round']:.2f} requests per round on "
                  "average; per round (ms, p50 / p95 / p99), next to the simulated stages above:", "",
                  "| part | what | p50 / p95 / p99 |", "|---|---|---|"]
        for key, what in WALL_PARTS.items():
            v = rounds["ms"][key]
            lines.append(f"| {key} | {what} | {_f(v['p50'], 3)} / {_f(v['p95'], 3)} / {_f(v['p99'], 3)} |")
    return lines + [""]


def _verdict_table(verdict: dict | None) -> list[str]:
    if not verdict:
        return []
    lines = ["| method | Δ NDCG@10 vs static | relative | RTT p50 / p99 (ms) | bytes per device |", "|---|---|---|---|---|"]
    for name, v in verdict.items():
        rel = "–" if v["relative"] is None else f"{v['relative']:+.1%}"
        lines.append(f"| {name} | {v['delta']:+.4f} | {rel} | {_f(v['rtt_ms_p50'], 1)} / {_f(v['rtt_ms_p99'], 1)} | "
                     f"{_size(int(v['bytes_per_device'] or 0))} |")
    return lines + [""]


def render_markdown(summary: dict, manifest: dict, plots: list[str] = ()) -> str:
    lines = [f"# persona-sim run: {summary.get('scenario', '?')}", ""]
    lines += [
        f"- seed **{summary.get('seed')}**, cloud compute mode **{summary.get('compute_mode')}**, "
        f"transport **{summary.get('transport')}**, shards **{summary.get('shards')}**",
        f"- network **{summary.get('network')}**; cloud **{summary.get('cloud')}**",
        f"- devices **{summary.get('devices')}**, dataset `{manifest.get('dataset', {}).get('name')}` "
        f"(fingerprint `{manifest.get('dataset', {}).get('fingerprint')}`)",
        f"- model bundle `{manifest.get('bundle', {}).get('signature')}`",
        f"- results digest `{summary.get('results_digest', '')[:16]}…`",
        "",
        "## Verdict",
        "",
        verdict_sentence(summary.get("verdict")),
        "",
        *_verdict_table(summary.get("verdict")),
        "## Accuracy and adaptation cost",
        "",
        "| method | HR@5 | HR@10 | NDCG@5 | NDCG@10 | AUC | events | adaptations | RTT p50 (ms) | RTT p95 (ms) "
        "| RTT p99 (ms) | up | down |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in summary["methods"].items():
        lines.append(
            f"| {name} | {_f(m['hr@5'])} | {_f(m['hr@10'])} | {_f(m['ndcg@5'])} | {_f(m['ndcg@10'])} | "
            f"{_f(m['auc'])} | {m['events']} | {m['adaptations']} | {_f(m['rtt_ms_p50'], 2)} | "
            f"{_f(m['rtt_ms_p95'], 2)} | {_f(m['rtt_ms_p99'], 2)} | {_size(m['bytes_up'])} | {_size(m['bytes_down'])} |")
    adaptive = {n: m for n, m in summary["methods"].items() if m["adaptations"]}
    if adaptive:
        lines += ["", "## Round trip by stage (virtual time, ms: p50 / p95 / p99)", "",
                  "| method | " + " | ".join(STAGES) + " |", "|---" * (len(STAGES) + 1) + "|"]
        for name, m in adaptive.items():
            cells = [_pct3(s) for s in m["stages_ms"].values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "## Adaptation cost by part (virtual time, ms: p50 / p95 / p99)", "",
                  "Device: its processor (waiting, then applying an edit or training); network: upload and download; "
                  "cloud: ingress, queue, compute, egress. Device compute is the processor time the adaptation "
                  "itself took (an energy proxy).", "",
                  "| method | device | network | cloud | device compute | device compute, total (s) "
                  "| bytes / adaptation |", "|---|---|---|---|---|---|---|"]
        for name, m in adaptive.items():
            cells = [_pct3(m["latency_split_ms"][p]) for p in ("device", "network", "cloud")]
            per = (m["bytes_up"] + m["bytes_down"]) / m["adaptations"]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {_pct3(m['device_compute_ms'])} | "
                         f"{m['device_compute_s_total']:.1f} | {_size(per)} |")
        failed = sum(m["failed_adaptations"] for m in adaptive.values())
        if failed:
            lines += ["", f"**{failed} adaptation request(s) failed**; see `adaptations.status` in results.sqlite."]
    if summary.get("drift"):
        lines += _drift_lines(summary["drift"])
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.removesuffix('.png')}]({p})" for p in plots]
    lines += _wall_lines(summary)
    lines += ["Metrics are means over all prediction events (every replayed interaction is one; the true item is "
              "ranked against sampled negatives). RTT is from request issued to edit applied on the device.", ""]
    return "\n".join(lines)


def _pct3(s: dict) -> str:
    return f"{_f(s['p50'], 2)} / {_f(s['p95'], 2)} / {_f(s['p99'], 2)}"


def render_table(summary: dict) -> str:
    """A compact table for the terminal."""
    head = f"{'method':<15}{'HR@10':>8}{'NDCG@10':>9}{'AUC':>8}{'adapt':>7}{'RTT p50':>9}{'p95':>8}{'p99':>8}  up / down"
    rows = [head, "-" * len(head)]
    for name, m in summary["methods"].items():
        rows.append(f"{name:<15}{_f(m['hr@10']):>8}{_f(m['ndcg@10']):>9}{_f(m['auc']):>8}{m['adaptations']:>7}"
                    f"{_f(m['rtt_ms_p50'], 1):>9}{_f(m['rtt_ms_p95'], 1):>8}{_f(m['rtt_ms_p99'], 1):>8}"
                    f"  {_size(m['bytes_up'])} / {_size(m['bytes_down'])}")
    if summary.get("verdict"):
        rows += ["", verdict_sentence(summary["verdict"]).replace("**", "")]
    return "\n".join(rows)
