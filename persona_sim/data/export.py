"""Write a dataset in each of the formats the loaders read (``persona-sim data convert``).

Where the dataset has no timestamps, interaction j of a user is stamped
``EPOCH + j`` days, which keeps each user's order under every format's sort.
"""
from __future__ import annotations

import gzip
import json
from itertools import chain
from pathlib import Path
from typing import IO, Iterator

from ..errors import DatasetError
from .sequences import Dataset

EPOCH = 1_300_000_000   # 2011-03-13, a plausible review time
DAY = 86_400


def _rows(ds: Dataset) -> Iterator[tuple[int, int, int, int]]:
    """(user, item, rating, timestamp) in user and time order; users are numbered from 1."""
    for u, seq in enumerate(ds.sequences):
        times = ds.timestamps[u] if ds.timestamps is not None else None
        for j, item in enumerate(seq):
            yield u + 1, int(item), 5, int(times[j]) if times is not None else EPOCH + j * DAY


def _write(path: Path, lines: Iterator[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener: IO[str] = gzip.open(path, "wt", encoding="utf-8") if path.suffix == ".gz" else path.open("w")
    with opener as out:
        for line in lines:
            out.write(line + "\n")


def write_dataset(ds: Dataset, fmt: str, path: Path) -> None:
    rows = _rows(ds)
    if fmt == "sequences":
        _write(path, (f"{u + 1} " + " ".join(map(str, seq)) for u, seq in enumerate(ds.sequences)))
    elif fmt == "amazon-csv":
        _write(path, (f"U{u},I{i},{r}.0,{t}" for u, i, r, t in rows))
    elif fmt == "amazon-json":
        _write(path, (json.dumps({"reviewerID": f"U{u}", "asin": f"I{i}", "overall": float(r),
                                  "unixReviewTime": t}) for u, i, r, t in rows))
    elif fmt == "movielens":
        sep = "::" if path.name.endswith(".dat") else "\t"
        _write(path, (sep.join(map(str, row)) for row in rows))
    elif fmt == "recbole":
        header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
        _write(path, chain([header], ("\t".join(map(str, row)) for row in rows)))
    else:
        raise DatasetError(f"cannot write format {fmt!r}")
