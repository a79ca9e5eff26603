"""The in-memory dataset every part of the simulator reads, and how it is found.

Items are integers ``1..num_items``; ``0`` is padding. Each user is one
time-ordered ``int64`` array of item ids.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .config import DatasetSpec
from .errors import DatasetError

DATA_ENV = "PERSONA_SIM_DATA"
SEQUENCE_FILE = "sequences.txt"
ATTRIBUTE_FILE = "item_attributes.json"


@dataclass(frozen=True)
class Dataset:
    name: str
    num_items: int
    sequences: list[np.ndarray]          # one int64 array of item ids per user, oldest first
    item_category: np.ndarray | None     # (num_items + 1,) int64 category per item, or None

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @cached_property
    def _fingerprint(self) -> str:
        """Content hash of the interactions (order-sensitive); names the data in manifests."""
        h = hashlib.sha256()
        h.update(np.asarray([len(s) for s in self.sequences], dtype=np.int64).tobytes())
        for seq in self.sequences:
            h.update(np.ascontiguousarray(seq, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def fingerprint(self) -> str:
        """Computed once per dataset: stage keys, bundle paths and manifests all ask for it."""
        return self._fingerprint


def read_sequence_file(path: Path) -> list[np.ndarray]:
    """Read the plain layout ``user_id item item ...`` (one user per line, ids >= 1)."""
    sequences = []
    try:
        handle = path.open()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        for lineno, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                ids = [int(p) for p in parts]
            except ValueError:
                bad = next(p for p in parts if not p.lstrip("-").isdigit())
                raise DatasetError(f"{path}:{lineno}: expected integer ids, got {bad!r}") from None
            if len(ids) < 2:
                raise DatasetError(f"{path}:{lineno}: a user line needs a user id and at least one item")
            items = np.asarray(ids[1:], dtype=np.int64)
            if items.min() < 1:
                raise DatasetError(f"{path}:{lineno}: item ids start at 1, got {int(items.min())}")
            sequences.append(items)
    if not sequences:
        raise DatasetError(f"{path}: no user lines")
    return sequences


def _first_category(path: Path, num_items: int) -> np.ndarray | None:
    """Each item's first attribute id (its top category) from item_attributes.json."""
    if not path.exists():
        return None
    try:
        attrs = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not readable JSON ({exc})") from None
    cats = np.zeros(num_items + 1, dtype=np.int64)
    for item, values in attrs.items():
        i = int(item)
        if 1 <= i <= num_items and values:
            cats[i] = int(values[0])
    return cats


def resolve_dataset_dir(spec: DatasetSpec) -> Path:
    """Where a named dataset lives: ``dataset.path``, else ``$PERSONA_SIM_DATA/<name>``."""
    if spec.path is not None:
        candidates = [Path(spec.path)]
    elif os.environ.get(DATA_ENV):
        candidates = [Path(os.environ[DATA_ENV]) / spec.name]
    else:
        candidates = []
    for cand in candidates:
        if (cand / SEQUENCE_FILE).exists() or cand.is_file():
            return cand
    looked = ", ".join(str(c) for c in candidates) or f"nowhere (dataset.path unset and ${DATA_ENV} unset)"
    raise DatasetError(
        f"dataset '{spec.name}' not found; looked in: {looked}. Set dataset.path in the scenario, "
        f"or set {DATA_ENV} to a directory holding '{spec.name}/{SEQUENCE_FILE}'. Amazon review data "
        "comes from its publishers (McAuley et al., https://cseweb.ucsd.edu/~jmcauley/datasets.html); "
        "or use dataset.name: synthetic, which runs anywhere."
    )


def load_dataset(spec: DatasetSpec, seed: int) -> Dataset:
    """Build the scenario's dataset: the synthetic generator or a sequence directory."""
    if spec.name == "synthetic" and spec.path is None:
        from .synthetic import generate

        return generate(spec.synthetic, seed)
    where = resolve_dataset_dir(spec)
    seq_path = where if where.is_file() else where / SEQUENCE_FILE
    sequences = read_sequence_file(seq_path)
    num_items = int(max(s.max() for s in sequences))
    cats = None if where.is_file() else _first_category(where / ATTRIBUTE_FILE, num_items)
    return Dataset(spec.name, num_items, sequences, cats)
