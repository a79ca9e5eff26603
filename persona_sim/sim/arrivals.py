"""When a device's interactions happen: inter-arrival models in virtual time (integer µs).

``event_times(n)`` is prefix-consistent: the first m of n times equal ``event_times(m)``.
Drift injection relies on it: a shift is placed on the original stream's clock, and
the (possibly longer) shifted stream keeps every time before the shift. Each
random quantity comes from its own generator, spawned from (seed, device, purpose),
and is drawn one value per event in order, so longer draws only append.
"""
from __future__ import annotations

import numpy as np

from ..errors import DatasetError
from ..scenario.schema import ArrivalSpec

US = 1_000_000


class Arrivals:
    def __init__(self, spec: ArrivalSpec, seed: int, index: int, own_times_s: np.ndarray | None):
        if spec.kind == "timestamps" and own_times_s is None:
            raise DatasetError("devices.arrivals.kind is 'timestamps' but the dataset has no timestamps "
                               "(the plain sequence layout has none; use exponential or sessions)")
        self.spec, self.seed, self.index = spec, seed, index
        self.own = own_times_s
        self.mean_us = spec.mean_s * US
        if spec.kind == "timestamps" and len(own_times_s) > 1:
            self.mean_us = max(1.0, float(np.diff(own_times_s).mean()) * US / spec.compress)
        self.start = int(self._rng(0).integers(0, int(self.mean_us) + 1))

    def _rng(self, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.index, 1, purpose])

    def _exponential(self, n: int, mean_us: float, purpose: int) -> np.ndarray:
        return self._rng(purpose).exponential(mean_us, size=n)

    def gaps_us(self, n: int) -> np.ndarray:
        """(n,) gaps before each event after the first (the first is 0)."""
        spec = self.spec
        if spec.kind == "exponential":
            gaps = self._exponential(n, self.mean_us, 1)
        elif spec.kind == "sessions":
            within = self._exponential(n, self.mean_us, 1)
            between = self._exponential(n, spec.session_gap_s * US, 2)
            new_session = self._rng(3).random(n) < 1.0 / spec.session_items
            gaps = np.where(new_session, between, within)
        else:
            own = np.diff(self.own) * US / spec.compress
            extra = self._exponential(max(0, n - len(own) - 1), self.mean_us, 1)
            gaps = np.concatenate([[0.0], own, extra])[:n]
        gaps = np.maximum(1, np.round(gaps)).astype(np.int64)
        if n:
            gaps[0] = 0
        return gaps

    def event_times(self, n: int) -> np.ndarray:
        """(n,) virtual times (µs) of a device's first n interactions."""
        return self.start + np.cumsum(self.gaps_us(n))
