"""results.sqlite's tables as files other tools read: CSV (standard library) or Parquet (pyarrow, an extra).

Every table a run directory holds (predictions, adaptations, shifts, wall, rounds, meta), one file each,
with the same rows and column names; Parquet keeps SQLite's column types.
"""
from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

from ..errors import ScenarioError

FORMATS = ("csv", "parquet")


def table_names(db: Path) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    finally:
        con.close()


def read_table(db: Path, table: str) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of one table; a table the file lacks is an error naming the tables it has."""
    tables = table_names(db)
    if table not in tables:
        raise ValueError(f"{db} has no table {table!r}; it has {tables}")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cursor = con.execute(f'SELECT * FROM "{table}"')
        return [d[0] for d in cursor.description], cursor.fetchall()
    finally:
        con.close()


def export_run(run_dir: Path, fmt: str, out: Path) -> dict[str, int]:
    """Write every table of ``run_dir/results.sqlite`` into ``out`` as ``TABLE.csv`` or ``TABLE.parquet``;
    return the rows written per table."""
    db = run_dir / "results.sqlite"
    if not db.exists():
        raise ScenarioError(str(run_dir), [("RUN_DIR", "has no results.sqlite: not a finished run directory",
                                            str(run_dir))])
    if fmt not in FORMATS:
        raise ScenarioError("--format", [("--format", f"must be one of {', '.join(FORMATS)}", fmt)])
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ScenarioError("--format", [("--format", "parquet needs pyarrow: pip install 'persona-sim[export]'",
                                              fmt)]) from None
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for table in table_names(db):
        columns, rows = read_table(db, table)
        if fmt == "csv":
            with (out / f"{table}.csv").open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(columns)
                writer.writerows(rows)
        else:
            pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)}),
                           out / f"{table}.parquet")
        written[table] = len(rows)
    return written
