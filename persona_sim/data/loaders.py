"""Readers for the interaction formats people hold, all producing one ``Dataset``.

    sequences     ``user item item …`` per line (the layout of amazon-beauty/sequences.txt)
    amazon-csv    ``user,item,rating,timestamp`` (Amazon "ratings only" files; a header line is allowed)
    amazon-json   review JSON lines, plain or gzip: 2014/2018 names (reviewerID, asin, overall,
                  unixReviewTime) or 2023 names (user_id, parent_asin, rating, timestamp in ms)
    movielens     ``u.data`` (tab-separated) or ``ratings.dat`` (``::``): user, item, rating, timestamp
    recbole       RecBole atomic ``.inter``: a ``name:type`` header, then tab-separated rows

Every reader yields raw interactions (user, item, rating, time, file order); ``build``
applies the rating threshold and k-core filter, orders each user's interactions by
time (file order breaks ties), and numbers users and items by first appearance.
A malformed line raises ``DatasetError`` naming the file and the line.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from ..errors import DatasetError
from .sequences import Dataset, Sequences

FORMATS = ("sequences", "amazon-csv", "amazon-json", "movielens", "recbole")
JSON_FIELDS = {   # our name -> accepted field names, in preference order
    "user": ("reviewerID", "user_id"),
    "item": ("asin", "parent_asin"),
    "rating": ("overall", "rating"),
    "time": ("unixReviewTime", "timestamp"),
}


@dataclass
class Raw:
    """Interactions as read, in file order."""

    path: Path
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    ratings: list[float] = field(default_factory=list)   # empty: the format has none
    times: list[float] = field(default_factory=list)     # empty: the format has none


def _open(path: Path) -> IO[str]:
    try:
        with path.open("rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
        return gzip.open(path, "rt", encoding="utf-8") if gz else path.open(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from None


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    with _open(path) as handle:
        try:
            for lineno, line in enumerate(handle, 1):
                line = line.strip()
                if line:
                    yield lineno, line
        except (UnicodeDecodeError, EOFError, OSError) as exc:
            raise DatasetError(f"{path}: cannot decode ({exc})") from None


def _number(path: Path, lineno: int, what: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DatasetError(f"{path}:{lineno}: {what} must be a number, got {text!r}") from None


def read_sequence_lines(path: Path) -> Raw:
    raw = Raw(path)
    for lineno, line in read_lines(path):
        parts = line.split()
        if len(parts) < 2:
            raise DatasetError(f"{path}:{lineno}: a user line needs a user id and at least one item")
        bad = next((p for p in parts[1:] if not p.isdigit() or int(p) < 1), None)
        if bad is not None:
            raise DatasetError(f"{path}:{lineno}: item ids are integers >= 1, got {bad!r}")
        raw.users += [parts[0]] * (len(parts) - 1)
        raw.items += parts[1:]
    return raw


def _read_delimited(path: Path, sep: str | None, header_ok: bool) -> Raw:
    raw = Raw(path)
    for lineno, line in read_lines(path):
        parts = line.split(sep) if sep else line.split()
        if len(parts) < 3:
            raise DatasetError(f"{path}:{lineno}: expected user{sep or ' '}item{sep or ' '}rating[{sep or ' '}"
                               f"timestamp], got {len(parts)} field(s): {line[:80]!r}")
        if header_ok and lineno == 1 and not _is_number(parts[2]):
            continue                                         # a header line
        raw.users.append(parts[0].strip())
        raw.items.append(parts[1].strip())
        raw.ratings.append(_number(path, lineno, "rating", parts[2]))
        if len(parts) > 3:
            raw.times.append(_number(path, lineno, "timestamp", parts[3]))
        elif raw.times:
            raise DatasetError(f"{path}:{lineno}: timestamp missing (earlier lines have one)")
    return raw


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_amazon_csv(path: Path) -> Raw:
    return _read_delimited(path, ",", header_ok=True)


def read_movielens(path: Path) -> Raw:
    with _open(path) as handle:
        first = handle.readline()
    return _read_delimited(path, "::" if "::" in first else None, header_ok=False)


def read_amazon_json(path: Path) -> Raw:
    raw = Raw(path)
    for lineno, line in read_lines(path):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(rec, dict):
            raise DatasetError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        got = {}
        for ours, names in JSON_FIELDS.items():
            name = next((n for n in names if n in rec), None)
            if name is None and ours in ("user", "item"):
                raise DatasetError(f"{path}:{lineno}: no {ours} field (expected one of {', '.join(names)})")
            got[ours] = (name, rec.get(name))
        raw.users.append(str(got["user"][1]))
        raw.items.append(str(got["item"][1]))
        if got["rating"][0]:
            raw.ratings.append(_number(path, lineno, got["rating"][0], str(got["rating"][1])))
        if got["time"][0]:
            t = _number(path, lineno, got["time"][0], str(got["time"][1]))
            raw.times.append(t / 1000.0 if got["time"][0] == "timestamp" else t)   # 2023 files: milliseconds
    for what, values in (("rating", raw.ratings), ("time", raw.times)):
        if values and len(values) != len(raw.users):
            raise DatasetError(f"{path}: some lines have a {what} field and some do not")
    return raw


def read_recbole(path: Path) -> Raw:
    raw = Raw(path)
    lines = read_lines(path)
    try:
        _, header = next(lines)
    except StopIteration:
        raise DatasetError(f"{path}: empty file (a RecBole .inter file starts with a header line)") from None
    names = [h.split(":")[0] for h in header.split("\t")]
    col = {n: names.index(n) for n in ("user_id", "item_id", "rating", "timestamp") if n in names}
    if "user_id" not in col or "item_id" not in col:
        raise DatasetError(f"{path}:1: header needs user_id:token and item_id:token fields, got {header[:120]!r}")
    for lineno, line in lines:
        parts = line.split("\t")
        if len(parts) != len(names):
            raise DatasetError(f"{path}:{lineno}: expected {len(names)} tab-separated fields, got {len(parts)}")
        raw.users.append(parts[col["user_id"]])
        raw.items.append(parts[col["item_id"]])
        if "rating" in col:
            raw.ratings.append(_number(path, lineno, "rating", parts[col["rating"]]))
        if "timestamp" in col:
            raw.times.append(_number(path, lineno, "timestamp", parts[col["timestamp"]]))
    return raw


READERS = {"sequences": read_sequence_lines, "amazon-csv": read_amazon_csv, "amazon-json": read_amazon_json,
           "movielens": read_movielens, "recbole": read_recbole}


def detect_format(path: Path) -> str:
    """The format of one interaction file, from its name, else from its first line."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".inter"):
        return "recbole"
    if name in ("u.data", "ratings.dat"):
        return "movielens"
    if name.endswith((".json", ".jsonl")):
        return "amazon-json"
    if name.endswith(".csv"):
        return "amazon-csv"
    first = next((line for _, line in read_lines(path)), "")
    if first.startswith("{"):
        return "amazon-json"
    if "::" in first or first.count("\t") == 3:
        return "movielens"
    if "," in first:
        return "amazon-csv"
    if first.replace(" ", "").isdigit():
        return "sequences"
    raise DatasetError(f"{path}: cannot tell the format from the name or the first line {first[:80]!r}; "
                       f"set dataset.format to one of {', '.join(FORMATS)}")


def _codes(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Integer codes by first appearance, and the value of each code."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Keep interactions whose user and item both have >= k of them, repeated until stable."""
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep
    while True:
        uc = np.bincount(users[keep], minlength=int(users.max(initial=-1)) + 1)
        ic = np.bincount(items[keep], minlength=int(items.max(initial=-1)) + 1)
        drop = keep & ((uc[users] < k) | (ic[items] < k))
        if not drop.any():
            return keep
        keep &= ~drop


@dataclass(frozen=True)
class Built:
    sequences: Sequences
    timestamps: Sequences | None
    item_ids: list[str]          # raw id of item 1, 2, …


def build(raw: Raw, *, min_rating: float | None, kcore: int, keep_ids: bool = False) -> Built:
    """Filter, order and number raw interactions. ``keep_ids``: items are already 1..N integers."""
    if not raw.users:
        raise DatasetError(f"{raw.path}: no interactions")
    users, _ = _codes(raw.users)
    items, item_names = _codes(raw.items)
    keep = np.ones(len(users), dtype=bool)
    if min_rating is not None:
        if not raw.ratings:
            raise DatasetError(f"{raw.path}: dataset.min_rating is set ({min_rating}) but the file has no ratings")
        keep &= np.asarray(raw.ratings) >= min_rating
    sub = np.flatnonzero(keep)
    sub = sub[kcore_mask(users[sub], items[sub], kcore)]
    if len(sub) == 0:
        raise DatasetError(f"{raw.path}: no interactions left after min_rating={min_rating}, kcore={kcore}")
    times = np.asarray(raw.times, dtype=np.float64)[sub] if raw.times else None
    order = np.lexsort((sub, times if times is not None else np.zeros(len(sub)), users[sub]))
    sub = sub[order]
    u = users[sub]
    counts = np.bincount(u, minlength=int(users.max()) + 1)
    counts = counts[counts > 0]                  # users in first-appearance order; emptied ones dropped
    offsets = np.concatenate([[0], np.cumsum(counts)])
    if keep_ids and kcore <= 1 and min_rating is None:
        flat = np.asarray([int(item_names[i]) for i in items[sub]], dtype=np.int64)
        item_ids = [str(i) for i in range(1, int(flat.max()) + 1)]
    else:
        uniq, first, inv = np.unique(items[sub], return_index=True, return_inverse=True)
        new = np.empty(len(uniq), dtype=np.int64)
        new[np.argsort(first, kind="stable")] = np.arange(1, len(uniq) + 1)
        flat = new[inv]
        item_ids = [item_names[i] for i in uniq[np.argsort(first, kind="stable")]]
    ts = None if times is None else Sequences(times[order], offsets)
    return Built(Sequences(flat, offsets), ts, item_ids)


def read(path: Path, fmt: str, *, min_rating: float | None = None, kcore: int = 0) -> Built:
    if fmt not in READERS:
        raise DatasetError(f"{path}: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return build(READERS[fmt](path), min_rating=min_rating, kcore=kcore, keep_ids=fmt == "sequences")


def as_dataset(name: str, built: Built, categories: dict[str, str] | None) -> Dataset:
    """The dataset, with each item's category (from raw item id -> category name) where known."""
    item_category = None
    if categories:
        vocab: dict[str, int] = {}
        item_category = np.zeros(len(built.item_ids) + 1, dtype=np.int64)
        for i, raw_id in enumerate(built.item_ids, 1):
            c = categories.get(raw_id)
            if c is not None:
                item_category[i] = vocab.setdefault(c, len(vocab) + 1)
    return Dataset(name, len(built.item_ids), built.sequences, item_category, built.timestamps)
