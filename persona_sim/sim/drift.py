"""Injected distribution shifts: rewrite a device's replayed stream from a point in virtual time on.

Each ``DriftSpec`` picks its devices (a ``fraction``; injectors take consecutive
slices of one seeded shuffle of the devices, so fractions summing to at most 1
touch disjoint devices) and shifts each at its first interaction at or after
``at_s``. Everything a shift draws comes from a generator spawned from (seed,
device, injector), so a device's stream never depends on which process plans it.
Each applied shift is returned as a ``Shift`` and written to the results.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from ..data.sequences import Dataset
from ..errors import DatasetError
from ..scenario.schema import DriftSpec, Scenario

MIN_TAIL = 10          # category/popularity shifts replay at least this many interactions unless `events` says


@dataclass(frozen=True)
class Shift:
    kind: str
    event: int          # prediction-event index of the first shifted interaction
    t_us: int           # its virtual time
    detail: str         # JSON: donor user, categories, …


def targets(specs: list[DriftSpec], count: int, seed: int) -> list[set[int]]:
    """Device indices each injector shifts: its ``devices``, or its slice of the shuffle."""
    order = np.random.default_rng([seed, 0xD21F7]).permutation(count)
    out, start = [], 0
    for spec in specs:
        if spec.devices is not None:
            out.append(set(spec.devices))
            continue
        n = max(1, int(round(spec.fraction * count)))
        out.append({int(order[(start + i) % count]) for i in range(n)})
        start += n
    return out


class DriftContext:
    """What injectors draw from, shared by every device of a run: the held-out pool of users,
    their cluster labels (to pick a donor from another cluster), categories and popularity."""

    def __init__(self, dataset: Dataset, pool: np.ndarray, labels: np.ndarray | None, seed: int):
        self.dataset, self.pool, self.labels, self.seed = dataset, pool, labels, seed

    def donor(self, user: int, rng: np.random.Generator) -> int:
        """Another pool user, from a different cluster when there is one."""
        others = self.pool != user
        if self.labels is not None and not others.all():
            differ = others & (self.labels != self.labels[~others][0])
            if differ.any():
                others = differ
        candidates = self.pool[others]
        return int(candidates[rng.integers(len(candidates))])

    @cached_property
    def category_streams(self) -> dict[int, np.ndarray]:
        """Per category, the pool users' in-category interactions concatenated in pool order."""
        cats = self.dataset.item_category
        parts: dict[int, list[np.ndarray]] = {}
        for u in self.pool:
            seq = self.dataset.sequences[int(u)]
            for c in np.unique(cats[seq]):
                if c > 0:
                    parts.setdefault(int(c), []).append(seq[cats[seq] == c])
        return {c: np.concatenate(p) for c, p in parts.items()}

    @cached_property
    def trending(self) -> np.ndarray:
        """Long-tail items (at most the median count of interactions) that a popularity shift promotes."""
        counts = np.bincount(self.dataset.sequences.flat, minlength=self.dataset.num_items + 1)[1:]
        tail = np.flatnonzero(counts <= np.median(counts)) + 1
        return np.random.default_rng([self.seed, 0x7E4D]).permutation(tail)


def _dominant(items: np.ndarray, cats: np.ndarray) -> int:
    c = cats[items]
    c = c[c > 0]
    return int(np.bincount(c).argmax()) if len(c) else 0


def _from_sources(own: np.ndarray, donor: np.ndarray, take_donor: Callable[[int], bool]) -> np.ndarray:
    """Interleave two streams: event j comes from the donor if take_donor(j), else from own; an exhausted
    source gives way to the other."""
    out, i, d = [], 0, 0
    while i < len(own) or d < len(donor):
        if d < len(donor) and (i >= len(own) or take_donor(len(out))):
            out.append(donor[d])
            d += 1
        else:
            out.append(own[i])
            i += 1
    return np.asarray(out, dtype=np.int64)


def shift_stream(spec: DriftSpec, where: str, items: np.ndarray, p: int, t0_us: int, user: int,
                 times: Callable[[int], np.ndarray], ctx: DriftContext, rng: np.random.Generator,
                 context: int) -> tuple[np.ndarray, dict, list[tuple[int, dict]]]:
    """The stream after the shift at item position p; its detail; and extra switch points (periodic)."""
    rest = items[p:]
    kind = spec.kind
    if kind == "takeover":
        donor = ctx.donor(user, rng)
        return ctx.dataset.sequences[donor].copy(), {"donor_user": donor}, []
    if kind == "category":
        cats = ctx.dataset.item_category
        if cats is None:
            raise DatasetError(f"{where}.kind is 'category' but dataset {ctx.dataset.name!r} has no item categories "
                               "(give dataset.attributes, or use another kind)")
        own = _dominant(items[:p], cats)
        streams = {c: s for c, s in ctx.category_streams.items() if c != own}
        choices = sorted(streams)
        weights = np.asarray([len(streams[c]) for c in choices], dtype=np.float64)
        target = choices[int(rng.choice(len(choices), p=weights / weights.sum()))]
        n = spec.events or max(len(rest), MIN_TAIL)
        stream = streams[target]
        start = int(rng.integers(len(stream)))
        tail = np.resize(np.roll(stream, -start), n)
        return tail, {"from_category": own, "to_category": target}, []
    if kind == "popularity":
        trending = ctx.trending[: spec.trending]
        n = max(len(rest), spec.events or 0)
        base = np.resize(rest, n) if len(rest) else np.zeros(n, dtype=np.int64)
        w = 1.0 / np.arange(1, len(trending) + 1)
        draws = trending[rng.choice(len(trending), size=n, p=w / w.sum())]
        tail = np.where(rng.random(n) < spec.strength, draws, base)
        return tail, {"trending_items": int(len(trending)), "strength": spec.strength}, []
    donor = ctx.donor(user, rng)
    other = ctx.dataset.sequences[donor]
    t = times(p - context + len(rest) + len(other))[p - context:] - t0_us        # µs since the shift, per event
    if kind == "mixing":
        u = rng.random(len(t))
        ramp = np.clip(t / (spec.duration_s * 1e6), 0.0, 1.0)
        return _from_sources(rest, other, lambda j: u[j] < ramp[j]), {"donor_user": donor}, []
    period = spec.period_s * 1e6
    tail = _from_sources(rest, other, lambda j: int(t[j] // period) % 2 == 0)
    parity = (t[: len(tail)] // period).astype(np.int64) % 2            # 0: donor's phase, 1: own
    switches = [(int(j), {"donor_user": donor, "to": "own" if parity[j] else "donor"})
                for j in np.flatnonzero(np.diff(parity)) + 1]
    return tail, {"donor_user": donor, "to": "donor"}, switches


def inject(items: np.ndarray, user: int, index: int, specs: list[tuple[int, DriftSpec]], scenario: Scenario,
           ctx: DriftContext, times: Callable[[int], np.ndarray]) -> tuple[np.ndarray, list[Shift]]:
    """Apply this device's injectors (index into scenario.drift, spec) in order of at_s."""
    context = scenario.split.context
    shifts: list[Shift] = []
    for j, spec in sorted(specs, key=lambda js: (js[1].at_s, js[0])):
        t = times(len(items) - context)
        reached = np.flatnonzero(t >= spec.at_s * 1e6)
        first_free = shifts[-1].event + 1 if shifts else 0
        reached = reached[reached >= first_free]
        if not len(reached):
            continue
        e = int(reached[0])
        p = context + e
        rng = np.random.default_rng([scenario.seed, index, 0xD21F, j])
        tail, detail, switches = shift_stream(spec, f"drift[{j}]", items, p, int(t[e]), user, times, ctx, rng,
                                              context)
        items = np.concatenate([items[:p], tail]).astype(np.int64)
        shifts.append(Shift(spec.kind, e, int(t[e]), json.dumps(dict(detail, injector=j), sort_keys=True)))
        if switches:
            t_all = times(len(items) - context)
            shifts += [Shift(spec.kind, e + k, int(t_all[e + k]), json.dumps(dict(d, injector=j), sort_keys=True))
                       for k, d in switches if e + k < len(t_all)]
    return items, shifts
