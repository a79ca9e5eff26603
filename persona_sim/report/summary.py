"""summary.json: the run's figures, computed from results.sqlite alone."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from .recovery import accuracy_over_time, drift_summary
from .results import digest_later
from .verdict import run_verdict

STAGES = {   # stage name -> (start column, end column)
    "upload": ("issued_us", "upload_done_us"),          # the device's link (and cell)
    "ingress": ("upload_done_us", "enqueued_us"),       # the cloud's shared inbound capacity
    "queue": ("enqueued_us", "compute_start_us"),
    "compute": ("compute_start_us", "compute_end_us"),
    "egress": ("compute_end_us", "departed_us"),        # the cloud's shared outbound capacity
    "download": ("departed_us", "download_done_us"),    # the device's link (and cell)
    "device": ("download_done_us", "applied_us"),       # the device's processor: waits, then loads (or trains)
}
# Where an adaptation's time goes: the stages each part of the system is responsible for.
PARTS = {"network": ("upload", "download"), "cloud": ("ingress", "queue", "compute", "egress"), "device": ("device",)}
METRIC_COLUMNS = {"hr@5": "hr5", "hr@10": "hr10", "ndcg@5": "ndcg5", "ndcg@10": "ndcg10", "auc": "auc"}


def _pcts(values_us: np.ndarray) -> dict[str, float | None]:
    if len(values_us) == 0:
        return {"p50": None, "p95": None, "p99": None}
    p = np.percentile(values_us / 1000.0, [50, 95, 99])
    return {"p50": round(float(p[0]), 3), "p95": round(float(p[1]), 3), "p99": round(float(p[2]), 3)}


def method_summary(con: sqlite3.Connection, method: str) -> dict:
    cols = ", ".join(f"AVG({c})" for c in METRIC_COLUMNS.values())
    row = con.execute(f"SELECT COUNT(*), COUNT(DISTINCT device_id), {cols} FROM predictions WHERE method=?",
                      (method,)).fetchone()
    out: dict = {k: (round(v, 6) if v is not None else None) for k, v in zip(METRIC_COLUMNS, row[2:])}
    out["events"], out["devices"] = row[0], row[1]
    ok = np.asarray(con.execute(
        f"SELECT {', '.join(c for pair in STAGES.values() for c in pair)} FROM adaptations "
        "WHERE method=? AND status='ok' ORDER BY device_id, seq", (method,)).fetchall(),
        dtype=np.int64).reshape(-1, 2 * len(STAGES))
    failed = con.execute("SELECT COUNT(*) FROM adaptations WHERE method=? AND status != 'ok'", (method,)).fetchone()[0]
    up, down = con.execute("SELECT COALESCE(SUM(bytes_up),0), COALESCE(SUM(bytes_down),0) FROM adaptations "
                           "WHERE method=?", (method,)).fetchone()
    rtt = _pcts(ok[:, -1] - ok[:, 0])
    spans = {name: ok[:, 2 * i + 1] - ok[:, 2 * i] for i, name in enumerate(STAGES)}
    busy = np.asarray([r[0] for r in con.execute("SELECT COALESCE(device_us, 0) FROM adaptations "
                                                  "WHERE method=? AND status='ok'", (method,))], dtype=np.int64)
    out.update({
        "adaptations": int(len(ok)), "failed_adaptations": int(failed),
        "rtt_ms_p50": rtt["p50"], "rtt_ms_p95": rtt["p95"], "rtt_ms_p99": rtt["p99"],
        "bytes_up": int(up), "bytes_down": int(down),
        "bytes_per_device": round((up + down) / out["devices"], 1) if out["devices"] else 0.0,
        "bytes_down_per_adaptation": round(down / len(ok), 1) if len(ok) else None,   # the edit codec's size
        "stages_ms": {name: _pcts(v) for name, v in spans.items()},
        "latency_split_ms": {part: _pcts(sum(spans[s] for s in stages)) for part, stages in PARTS.items()},
        # the device's processor time spent adapting (applying, or training): an energy proxy
        "device_compute_ms": _pcts(busy),
        "device_compute_s_total": round(float(busy.sum()) / 1e6, 3),
    })
    return out


def build_summary(results: Path, methods: list[str], facts: dict) -> dict:
    digest = digest_later(results)                       # on another core while the rest is summed up
    con = sqlite3.connect(results)
    try:
        summary = {"methods": {m: method_summary(con, m) for m in methods}}
        summary["verdict"] = run_verdict(summary["methods"])
        drift = drift_summary(con, methods)
        if drift is not None:
            summary["drift"] = drift
        summary["accuracy_over_time"] = accuracy_over_time(con, methods)
        wall = np.asarray([r[0] for r in con.execute("SELECT cloud_compute_ns FROM wall")], dtype=np.float64)
        rounds = np.asarray(con.execute("SELECT reported, round_ns, codec_ns, server_ns, wait_ns FROM rounds").fetchall(),
                            dtype=np.float64).reshape(-1, 5)
    finally:
        con.close()
    summary["results_digest"] = digest()
    summary.update(facts)
    summary["wall_clock"] = {
        "cloud_compute_ms_p50": round(float(np.median(wall)) / 1e6, 4) if len(wall) else None,
        "rounds": _round_profile(rounds),
        "note": "measured wall time of the real path; not part of the simulated results",
    }
    return summary


def _round_profile(rounds: np.ndarray) -> dict:
    """Wall-clock ms per lockstep round, split into the node's encoding and decoding, the cloud's work,
    the wait for the other shards, and the rest: transport (sockets, gRPC, scheduling)."""
    reported, total, codec, server, wait = rounds.T / np.array([[1], [1e3], [1e3], [1e3], [1e3]])
    parts = {"round": total, "serialization": codec, "cloud": server, "shard_wait": wait,
             "transport": total - codec - server - wait}
    return {"count": int(len(rounds)), "requests_per_round": round(float(reported.mean()), 2) if len(rounds) else None,
            "ms": {k: _pcts(v) for k, v in parts.items()}}
