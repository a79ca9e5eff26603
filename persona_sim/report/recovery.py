"""Accuracy around injected shifts: the level before, the dip after, and how long recovery takes.

Per shift kind and method, every shift's device is aligned on the shift's event
(r = 0 is the first shifted interaction) and NDCG@10 is pooled over shifts at
each offset r in [-PRE, HORIZON):

    before            mean over r in [-PRE, -1]
    after             mean over r in [0, WINDOW)
    dip               before - the lowest WINDOW-event mean from r = 0 until recovery (or HORIZON)
    recovery_events   the first r >= 0 whose WINDOW-event mean is back to at least (1 - TOLERANCE) * before;
                      None if that does not happen within HORIZON events
    recovery_s        the median, over shifts that reach it, of the virtual time from the shift to event r

Pooled means (not means of per-device means) weight every event equally; a
shift contributes only the offsets its device actually has, and a window counts
only where at least SUPPORT of the shifts still have events (so the last few
long-lived devices cannot decide the figures).
"""
from __future__ import annotations

import sqlite3

import numpy as np

METRIC = "ndcg10"
PRE, WINDOW, HORIZON = 5, 3, 30
TOLERANCE = 0.10
SUPPORT = 0.2


def query_floats(con: sqlite3.Connection, sql: str, args: tuple = (), columns: int = 1) -> np.ndarray:
    """A query's rows as an (n, columns) float64 array, streamed from the cursor (no list of a million tuples)."""
    dtype = np.dtype([(f"c{i}", np.float64) for i in range(columns)])
    rows = np.fromiter(con.execute(sql, args), dtype=dtype)
    return rows.view(np.float64).reshape(-1, columns)


def _device_events(con: sqlite3.Connection, method: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The predictions of ``method`` on every device that had a shift, in event order: (times µs, metric)."""
    rows = con.execute(f"SELECT device_id, t_us, {METRIC} FROM predictions WHERE method=? AND device_id IN "
                       "(SELECT device_id FROM shifts) ORDER BY device_id, event", (method,)).fetchall()
    if not rows:
        return {}
    devices, times, values = zip(*rows)
    times, values = np.asarray(times, dtype=np.int64), np.asarray(values, dtype=np.float64)
    ids = np.asarray(devices)
    starts = np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1, [len(ids)]])
    return {devices[lo]: (times[lo:hi], values[lo:hi]) for lo, hi in zip(starts[:-1].tolist(), starts[1:].tolist())}


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def _one(shifts: list[tuple[str, int, int]], events: dict) -> dict:
    offsets = np.arange(-PRE, HORIZON)
    sums, counts = np.zeros(len(offsets)), np.zeros(len(offsets))
    for dev, e, _ in shifts:
        t, v = events.get(dev, (np.empty(0), np.empty(0)))
        idx = e + offsets
        ok = (idx >= 0) & (idx < len(v))
        sums[ok] += v[idx[ok]]
        counts[ok] += 1
    curve = np.where(counts >= max(1.0, SUPPORT * len(shifts)), sums / np.maximum(counts, 1), np.nan)
    pre = slice(0, PRE)
    before = sums[pre].sum() / counts[pre].sum() if counts[pre].sum() else np.nan
    post_sums, post_counts = sums[PRE:], counts[PRE:]
    need = WINDOW * max(1.0, SUPPORT * len(shifts))
    win = np.asarray([post_sums[r:r + WINDOW].sum() / post_counts[r:r + WINDOW].sum()
                      if post_counts[r:r + WINDOW].sum() >= need else np.nan for r in range(HORIZON)])
    after = win[0]
    recovered = np.flatnonzero(win >= (1 - TOLERANCE) * before) if np.isfinite(before) else np.empty(0)
    rec_r = int(recovered[0]) if len(recovered) else None
    until = win[: (rec_r if rec_r is not None else HORIZON) + 1]
    rec_s = None
    if rec_r is not None:
        waits = [(events[dev][0][e + rec_r] - t0) / 1e6 for dev, e, t0 in shifts
                 if dev in events and e + rec_r < len(events[dev][0])]
        rec_s = float(np.median(waits)) if waits else None
    return {"before": _round(before), "after": _round(after),
            "dip": _round(before - np.nanmin(until)) if np.isfinite(until).any() and np.isfinite(before) else None,
            "recovery_events": rec_r, "recovery_s": _round(rec_s, 1),
            "curve": {"offsets": offsets.tolist(), "mean": [_round(c) for c in curve], "count": counts.astype(int).tolist()}}


def drift_summary(con: sqlite3.Connection, methods: list[str]) -> dict | None:
    """The ``drift`` section of summary.json, or None when the run injected no shifts."""
    rows = con.execute("SELECT device_id, kind, event, t_us FROM shifts ORDER BY device_id, shift").fetchall()
    if not rows:
        return None
    by_kind: dict[str, list[tuple[str, int, int]]] = {}
    for dev, kind, e, t in rows:
        by_kind.setdefault(kind, []).append((dev, int(e), int(t)))
    events = {m: _device_events(con, m) for m in methods}
    return {
        "metric": "ndcg@10", "pre_events": PRE, "window_events": WINDOW, "horizon_events": HORIZON,
        "tolerance": TOLERANCE, "support": SUPPORT,
        "shifts": {k: {"count": len(v), "devices": len({d for d, _, _ in v})} for k, v in sorted(by_kind.items())},
        "recovery": {k: {m: _one(v, events[m]) for m in methods} for k, v in sorted(by_kind.items())},
    }


def time_edges(times_us: np.ndarray, bins: int) -> np.ndarray:
    """Bin edges over the first 95 % of the times, so a few long-lived devices do not stretch the axis."""
    return np.linspace(times_us.min(), np.percentile(times_us, 95) + 1, bins + 1)


def accuracy_over_time(con: sqlite3.Connection, methods: list[str], bins: int = 40) -> dict:
    """Mean NDCG@10 per virtual-time bin per method (bin centres in s). Bins (``time_edges``) holding fewer
    than 1 % of a method's events are left empty (None), so a few long-lived devices do not draw the tail."""
    times = query_floats(con, "SELECT t_us FROM predictions")[:, 0]
    if not len(times):
        return {"t_s": [], "methods": {}}
    edges = time_edges(times, bins)
    out = {}
    for m in methods:
        rows = query_floats(con, f"SELECT t_us, {METRIC} FROM predictions WHERE method=?", (m,), 2)
        rows = rows[rows[:, 0] < edges[-1]]
        which = np.clip(np.searchsorted(edges, rows[:, 0], side="right") - 1, 0, bins - 1)
        sums = np.bincount(which, rows[:, 1], minlength=bins)
        counts = np.bincount(which, minlength=bins)
        least = max(1, 0.01 * len(rows))
        out[m] = [_round(s / c) if c >= least else None for s, c in zip(sums, counts)]
    return {"t_s": [round(float(c) / 1e6, 1) for c in (edges[:-1] + edges[1:]) / 2], "methods": out}
