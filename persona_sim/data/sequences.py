"""The in-memory dataset every part of the simulator reads.

Items are integers ``1..num_items``; ``0`` is padding. Users' time-ordered
item sequences are stored flat (one ``int64`` array plus offsets, as in CSR),
so a million users cost one array, not a million Python objects; ``Sequences``
still reads like a list of arrays (``seqs[u]`` is a view).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Iterator

import numpy as np


class Sequences:
    """A read-only list of 1-D arrays backed by one flat array and offsets."""

    __slots__ = ("flat", "offsets")

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != len(flat):
            raise ValueError("offsets must start at 0 and end at len(flat)")
        self.flat, self.offsets = flat, offsets.astype(np.int64, copy=False)

    @classmethod
    def from_arrays(cls, arrays: Iterable[np.ndarray], dtype=np.int64) -> "Sequences":
        arrays = [np.asarray(a, dtype=dtype) for a in arrays]
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(a) for a in arrays])
        flat = np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)
        return cls(flat, offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"user index {i} out of range ({len(self)} users)")
        return self.flat[self.offsets[i]: self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.flat[self.offsets[i]: self.offsets[i + 1]]


@dataclass(frozen=True)
class Dataset:
    name: str
    num_items: int
    sequences: Sequences                 # item ids per user, oldest first
    item_category: np.ndarray | None     # (num_items + 1,) int64 category per item (0: none), or None
    timestamps: Sequences | None = None  # float64 seconds per interaction, aligned with sequences, or None

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(self.sequences.offsets[-1])

    @cached_property
    def _fingerprint(self) -> str:
        """Content hash of the interactions (order-sensitive); names the data in manifests."""
        h = hashlib.sha256()
        h.update(self.sequences.lengths.tobytes())
        h.update(memoryview(np.ascontiguousarray(self.sequences.flat, dtype=np.int64)))   # no copy of the data
        return h.hexdigest()[:16]

    def fingerprint(self) -> str:
        """Computed once per dataset: stage keys, bundle paths and manifests all ask for it."""
        return self._fingerprint

    def info(self) -> dict:
        """What ``persona-sim data info`` prints: sizes, sequence-length percentiles, attributes."""
        lengths = self.sequences.lengths
        pcts = np.percentile(lengths, [0, 25, 50, 75, 90, 99, 100]) if len(lengths) else np.zeros(7)
        out = {
            "name": self.name, "users": self.num_users, "items": self.num_items,
            "interactions": self.num_interactions,
            "density": round(self.num_interactions / max(1, self.num_users * self.num_items), 6),
            "sequence_length": {k: float(v) for k, v in zip(("min", "p25", "p50", "p75", "p90", "p99", "max"), pcts)},
            "mean_length": round(float(lengths.mean()), 3) if len(lengths) else 0.0,
            "timestamps": self.timestamps is not None,
            "fingerprint": self.fingerprint(),
        }
        if self.item_category is not None:
            cats = self.item_category[1:]
            out["categories"] = int(len(np.unique(cats[cats > 0])))
            out["items_with_category"] = int((cats > 0).sum())
        else:
            out["categories"] = None
        return out
