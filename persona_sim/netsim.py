"""The first link model: per-transfer time on a device's own up/down link.

    time = propagation delay + uniform jitter + bytes * 8 / capacity

Times are integer microseconds of virtual time, rounded up. Shared bottlenecks,
named profiles and traces build on this (issue 5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import NetworkSpec


@dataclass(frozen=True)
class Link:
    up_bps: float
    down_bps: float
    delay_us: int
    jitter_us: int

    @classmethod
    def from_spec(cls, spec: NetworkSpec) -> "Link":
        return cls(spec.uplink_mbps * 1e6, spec.downlink_mbps * 1e6,
                   int(round(spec.delay_ms * 1000)), int(round(spec.jitter_ms * 1000)))

    def _time(self, nbytes: int, bps: float, rng: np.random.Generator) -> int:
        jitter = int(rng.integers(0, self.jitter_us + 1)) if self.jitter_us else 0
        return self.delay_us + jitter + math.ceil(nbytes * 8 * 1e6 / bps)

    def upload_us(self, nbytes: int, rng: np.random.Generator) -> int:
        return self._time(nbytes, self.up_bps, rng)

    def download_us(self, nbytes: int, rng: np.random.Generator) -> int:
        return self._time(nbytes, self.down_bps, rng)

    def min_upload_us(self, min_bytes: int) -> int:
        """A lower bound on any upload of at least ``min_bytes``: no jitter."""
        return self.delay_us + math.ceil(min_bytes * 8 * 1e6 / self.up_bps)
