"""Simulated results in SQLite (standard library), and their digest.

Tables
  predictions   one row per prediction event (method, device, virtual time, metrics)
  adaptations   one row per adaptation with its stage times (virtual µs) and bytes
  shifts        one row per injected distribution shift (device, kind, event, virtual time, detail JSON)
  wall          wall-clock diagnostics (measured cloud compute); never in the digest
  rounds        wall-clock profile of each lockstep round of the real transport; never in the digest
  meta          key/value facts about the shard or run
Shard files (``shard-I-of-N.sqlite``) have the same schema and merge into
``results.sqlite``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Callable

PREDICTION_COLUMNS = ("method", "device_id", "event", "t_us", "item", "edit_seq", "rank",
                      "hr5", "hr10", "ndcg5", "ndcg10", "auc")
ADAPTATION_COLUMNS = ("method", "device_id", "seq", "status", "prototype_id", "issued_us", "upload_done_us",
                      "enqueued_us", "compute_start_us", "compute_end_us", "departed_us", "download_done_us",
                      "applied_us", "bytes_up", "bytes_down", "edit_norm", "device_us")
SHIFT_COLUMNS = ("device_id", "shift", "kind", "event", "t_us", "detail")
WALL_COLUMNS = ("method", "device_id", "seq", "cloud_compute_ns")
ROUND_COLUMNS = ("shard", "method", "until_us", "reported", "replies", "round_ns", "codec_ns", "server_ns", "wait_ns")

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
  method TEXT, device_id TEXT, event INTEGER, t_us INTEGER, item INTEGER, edit_seq INTEGER, rank INTEGER,
  hr5 REAL, hr10 REAL, ndcg5 REAL, ndcg10 REAL, auc REAL);
CREATE TABLE IF NOT EXISTS adaptations (
  method TEXT, device_id TEXT, seq INTEGER, status TEXT, prototype_id INTEGER, issued_us INTEGER,
  upload_done_us INTEGER, enqueued_us INTEGER, compute_start_us INTEGER, compute_end_us INTEGER,
  departed_us INTEGER, download_done_us INTEGER, applied_us INTEGER, bytes_up INTEGER, bytes_down INTEGER, edit_norm REAL,
  device_us INTEGER, PRIMARY KEY (method, device_id, seq));
CREATE TABLE IF NOT EXISTS shifts (
  device_id TEXT, shift INTEGER, kind TEXT, event INTEGER, t_us INTEGER, detail TEXT, PRIMARY KEY (device_id, shift));
CREATE TABLE IF NOT EXISTS wall (method TEXT, device_id TEXT, seq INTEGER, cloud_compute_ns INTEGER);
CREATE TABLE IF NOT EXISTS rounds (shard INTEGER, method TEXT, until_us INTEGER, reported INTEGER, replies INTEGER,
  round_ns INTEGER, codec_ns INTEGER, server_ns INTEGER, wait_ns INTEGER);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


def _insert(con: sqlite3.Connection, table: str, columns: tuple[str, ...], rows) -> None:
    marks = ",".join("?" * len(columns))
    con.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", rows)


class ResultsWriter:
    """One shard's results file, written while the run goes: rows arrive in chunks, and each method's rows
    are one transaction, committed with the method's name in ``methods_done``. A method cut short leaves
    nothing behind (SQLite rolls its transaction back), so the file only ever holds whole methods, and
    memory stays flat however many rows a run makes."""

    TABLES = {"predictions": PREDICTION_COLUMNS, "adaptations": ADAPTATION_COLUMNS, "wall": WALL_COLUMNS,
              "rounds": ROUND_COLUMNS, "shifts": SHIFT_COLUMNS}

    def __init__(self, path: Path, meta: dict, shifts: list[tuple], keep: bool = False):
        """A fresh file at ``path``; with ``keep``, the existing one, less any rows of methods it does not
        list as done."""
        kept = keep and path.exists()
        if not kept:
            path.unlink(missing_ok=True)
        self.con = sqlite3.connect(path)
        self.con.executescript(SCHEMA)
        self.done: list[str] = (read_meta(path).get("methods_done") or []) if kept else []
        if kept:
            marks = ",".join("?" * len(self.done))
            for table in ("predictions", "adaptations", "wall", "rounds"):
                self.con.execute(f"DELETE FROM {table} WHERE method NOT IN ({marks})", self.done)
            self.con.execute("DELETE FROM shifts")
        self.append("shifts", shifts)
        self._meta({**meta, "methods_done": self.done})
        self.con.commit()

    def append(self, table: str, rows: list[tuple]) -> None:
        if rows:
            _insert(self.con, table, self.TABLES[table], rows)

    def discard_method(self) -> None:
        """Drop the rows of the method in progress (it starts again)."""
        self.con.rollback()

    def method_done(self, method: str) -> None:
        self.done.append(method)
        self._meta({"methods_done": self.done})
        self.con.commit()

    def _meta(self, meta: dict) -> None:
        self.con.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             [(k, json.dumps(v)) for k, v in meta.items()])

    def close(self) -> None:
        self.con.close()


def merge_results(shards: list[Path], out: Path, consume: bool = False) -> None:
    """Concatenate shard files into one results file (rows are keyed by device, so no clashes). With
    ``consume`` (the shard files are not kept), a lone shard's file becomes the results file: the same rows
    in the same order, without copying them (20,000 devices: 1.6 M predictions)."""
    if consume and len(shards) == 1:
        with contextlib.closing(sqlite3.connect(shards[0])) as con:
            con.execute("DELETE FROM meta WHERE key = 'shard'")
            con.commit()
        shards[0].replace(out)
        return
    tmp = out.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        con.executescript(SCHEMA)
        for i, shard in enumerate(shards):
            con.execute("ATTACH DATABASE ? AS s", (str(shard),))
            for table in ("predictions", "adaptations", "wall", "shifts", "rounds"):
                con.execute(f"INSERT INTO {table} SELECT * FROM s.{table}")
            if i == 0:
                con.execute("INSERT INTO meta SELECT * FROM s.meta WHERE key != 'shard'")
            con.commit()
            con.execute("DETACH DATABASE s")
        con.commit()
    finally:
        con.close()
    tmp.replace(out)


def results_digest(path: Path) -> str:
    """SHA-256 over every simulated value (times, bytes, metrics), in a canonical order.

    Wall-clock diagnostics are left out, so the digest is equal for any two runs
    that simulated the same thing, whatever the machine's speed.
    """
    h = hashlib.sha256()
    con = sqlite3.connect(path)
    try:
        for table, cols, order in (("predictions", PREDICTION_COLUMNS, "method, device_id, event"),
                                   ("adaptations", ADAPTATION_COLUMNS, "method, device_id, seq"),
                                   ("shifts", SHIFT_COLUMNS, "device_id, shift")):
            h.update(table.encode())
            for row in con.execute(f"SELECT {','.join(cols)} FROM {table} ORDER BY {order}"):
                h.update(repr(row).encode())
    finally:
        con.close()
    return h.hexdigest()


def digest_later(path: Path) -> Callable[[], str]:
    """``results_digest(path)``, computed by a small child process (this module alone: sqlite and hashlib,
    ~20 MB) while this one goes on; returns the call that waits for it (and computes it here if the child
    could not)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    try:
        child = subprocess.Popen([sys.executable, "-m", __name__, str(path)], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, env=env)
    except OSError:
        child = None

    def wait() -> str:
        out = child.communicate()[0].strip() if child is not None else ""
        return out if child is not None and child.returncode == 0 and len(out) == 64 else results_digest(path)
    return wait


def read_meta(path: Path) -> dict:
    con = sqlite3.connect(path)
    try:
        return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
    finally:
        con.close()


def methods_done(path: Path) -> list[str] | None:
    """The methods whose results the file holds in full (None: a file from before this was recorded)."""
    return read_meta(path).get("methods_done")


def set_meta(path: Path, key: str, value) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))
        con.commit()
    finally:
        con.close()


if __name__ == "__main__":          # digest_later's child
    print(results_digest(Path(sys.argv[1])))
