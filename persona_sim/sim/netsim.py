"""The network in virtual time: each device's own link, shared cells, bandwidth traces and loss.

One transfer (an upload or a download of the real serialized bytes):

    propagation delay + uniform jitter, then transmission through the device's access link:
      exclusive   bits / capacity, or integrated over a bandwidth trace from the device's offset
      in a cell   the cell's capacity split max-min fairly among the transfers in progress on it,
                  none above its own link's capacity (a fluid model, recomputed at every start and end)
    a lost attempt (probability ``loss`` each) waits ``rto`` and is transmitted again.

Times are integer microseconds, rounded up. Named profiles draw each device's
capacities and delay from a log-normal around the profile's medians, from a
generator spawned from (seed, device), so a device's link never depends on
which process simulates it. The profile figures are typical values chosen for
illustration, not measurements; use ``fixed`` or a trace to model a known link.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import simpy

from ..errors import DatasetError
from ..scenario.schema import NetworkSpec

MAX_LOSSES = 16      # lost attempts per transfer, at most


@dataclass(frozen=True)
class Profile:
    up_mbps: float       # medians
    down_mbps: float
    delay_ms: float
    jitter_ms: float
    loss: float
    spread: float = 0.6  # σ of log(capacity)


PROFILES = {
    "wifi": Profile(20.0, 60.0, 8.0, 3.0, 0.001, 0.5),
    "5g": Profile(30.0, 150.0, 12.0, 4.0, 0.002, 0.6),
    "4g": Profile(8.0, 30.0, 35.0, 10.0, 0.005, 0.7),
    "3g": Profile(0.8, 3.0, 100.0, 40.0, 0.02, 0.7),
}


@dataclass(frozen=True)
class Trace:
    """A repeating piecewise-constant capacity: segment i runs from starts_s[i] to the next start."""

    starts_s: np.ndarray
    mbps: np.ndarray
    period_s: float

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        path = Path(path)
        rows = []
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise DatasetError(f"network.trace {path}: cannot read ({exc.strerror})") from None
        for lineno, line in enumerate(lines, 1):
            parts = line.split("#")[0].split()
            if not parts:
                continue
            try:
                t, mbps = float(parts[0]), float(parts[1])
            except (ValueError, IndexError):
                raise DatasetError(f"{path}:{lineno}: expected 'time_s Mbps', got {line.strip()!r}") from None
            if mbps < 0 or (rows and t <= rows[-1][0]):
                raise DatasetError(f"{path}:{lineno}: times must increase and Mbps be >= 0, got {line.strip()!r}")
            rows.append((t, mbps))
        if not rows or not any(m > 0 for _, m in rows):
            raise DatasetError(f"{path}: a trace needs at least one line with capacity above 0")
        starts = np.asarray([t for t, _ in rows]) - rows[0][0]
        step = starts[-1] - starts[-2] if len(starts) > 1 else 1.0
        return cls(starts, np.asarray([m for _, m in rows]), float(starts[-1] + step))

    def transmit_s(self, bits: float, start_s: float) -> float:
        """Seconds to send ``bits`` starting at ``start_s`` (trace time, wraps around)."""
        t, pos = 0.0, start_s % self.period_s
        i = int(np.searchsorted(self.starts_s, pos, side="right")) - 1
        while True:
            end = self.starts_s[i + 1] if i + 1 < len(self.starts_s) else self.period_s
            bps = self.mbps[i] * 1e6
            if bps > 0 and bits <= (end - pos) * bps:
                return t + bits / bps
            bits -= (end - pos) * bps
            t += end - pos
            i, pos = (i + 1, end) if i + 1 < len(self.starts_s) else (0, 0.0)


@dataclass(frozen=True)
class DeviceLink:
    up_bps: float
    down_bps: float
    delay_us: int
    jitter_us: int
    loss: float
    rto_us: int
    trace: Trace | None = None
    trace_offset_s: float = 0.0

    def bps(self, up: bool) -> float:
        return self.up_bps if up else self.down_bps

    def tx_us(self, nbytes: int, up: bool, now_us: int) -> int:
        """Transmission alone on the exclusive link."""
        if self.trace is not None:
            return math.ceil(self.trace.transmit_s(nbytes * 8, self.trace_offset_s + now_us / 1e6) * 1e6 - 1e-6)
        return math.ceil(nbytes * 8 * 1e6 / self.bps(up))

    def propagation_us(self, rng: np.random.Generator) -> int:
        return self.delay_us + (int(rng.integers(0, self.jitter_us + 1)) if self.jitter_us else 0)

    def lost_attempts(self, rng: np.random.Generator) -> int:
        n = 0
        if self.loss > 0:
            while n < MAX_LOSSES and rng.random() < self.loss:
                n += 1
        return n

    def min_upload_us(self, min_bytes: int) -> int:
        """A lower bound on any upload of at least ``min_bytes`` (no jitter, no loss, no sharing)."""
        return self.delay_us + (0 if self.trace is not None else math.ceil(min_bytes * 8 * 1e6 / self.up_bps))


def device_link(spec: NetworkSpec, seed: int, index: int, trace: Trace | None = None) -> DeviceLink:
    rto = int(round(spec.rto_ms * 1000))
    offset = 0.0
    if trace is not None:
        offset = float(np.random.default_rng([seed, index, 5]).uniform(0, trace.period_s))
    if spec.profile == "fixed":
        return DeviceLink(spec.uplink_mbps * 1e6, spec.downlink_mbps * 1e6, int(round(spec.delay_ms * 1000)),
                          int(round(spec.jitter_ms * 1000)), spec.loss or 0.0, rto, trace, offset)
    p = PROFILES[spec.profile]
    z = np.random.default_rng([seed, index, 4]).standard_normal(3)
    delay_ms = max(0.3 * p.delay_ms, p.delay_ms * math.exp(0.3 * z[2]))
    return DeviceLink(p.up_mbps * 1e6 * math.exp(p.spread * z[0]), p.down_mbps * 1e6 * math.exp(p.spread * z[1]),
                      int(round(delay_ms * 1000)), int(round(p.jitter_ms * 1000)),
                      p.loss if spec.loss is None else spec.loss, rto, trace, offset)


def min_delay_us(spec: NetworkSpec) -> int:
    """No transfer on any device's link takes less than this (its propagation delay, before jitter, loss
    and transmission): the floor ``device_link`` puts under every device's delay."""
    if spec.profile == "fixed":
        return int(round(spec.delay_ms * 1000))
    return max(0, math.floor(0.3 * PROFILES[spec.profile].delay_ms * 1000) - 1)


def at(env: simpy.Environment, t: float, callback: Callable[[simpy.Event], None]) -> None:
    """Call ``callback`` at virtual time ``t``, after what is already due then (a timeout's callback: a SimPy
    process would cost two more events)."""
    env.timeout(t - env.now).callbacks.append(callback)


class SharedLink:
    """A bottleneck whose capacity is shared max-min fairly by the transfers in progress (fluid model).

    The transfers are kept in start order in plain lists, and the shares of flows of one cap (the
    cloud's links) are computed once per count of flows (``_water_filled``): a round of the cloud's
    clock at Beauty size with 256 requests in flight spent 5 ms sorting and re-sharing them at every
    start and end. The arithmetic is the same, element by element, so are the times."""

    def __init__(self, env: simpy.Environment, bps: float):
        self.env, self.per_us = env, bps / 1e6              # bits per µs
        self.left: list[float] = []                        # bits each transfer in progress has still to send
        self.caps: list[float] = []                        # its cap, bits per µs
        self.rates: Sequence[float] = ()                   # its share now, bits per µs
        self.done: list[simpy.Event] = []                  # its end
        self.last = env.now
        self.generation = 0
        self.settling = False

    def transmit(self, bits: float, cap_bps: float) -> simpy.Event:
        self._advance()
        done = self.env.event()
        self.left.append(float(bits))
        self.caps.append(cap_bps / 1e6)
        self.done.append(done)
        if not self.settling:      # K transfers starting at one instant share one recomputation, not K
            self.settling = True
            at(self.env, self.env.now, self._settle)
        return done

    def _settle(self, _event: simpy.Event) -> None:
        self.settling = False
        self._reschedule()

    def _advance(self) -> None:
        elapsed = self.env.now - self.last
        self.last = self.env.now
        n = len(self.rates)        # transfers started since the last share began now: nothing elapsed for them
        if elapsed and n == 1:     # the usual case on a link seldom shared
            self.left[0] -= self.rates[0] * elapsed
        elif elapsed:
            self.left[:n] = [left - rate * elapsed for left, rate in zip(self.left, self.rates)]

    def _fair_rates(self) -> Sequence[float]:
        """Water-filling: every flow gets an equal share, flows capped below it keep their cap (taken in
        order of cap, then of start)."""
        n, caps = len(self.caps), self.caps
        if not n:
            return ()
        if n <= WATER_KEPT_FLOWS and min(caps) == max(caps):     # one cap (the cloud's links): in start order
            return _water_filled(self.per_us, caps[0], n)
        order = sorted(range(n), key=caps.__getitem__)              # a stable sort: ties in start order
        rates = [0.0] * n
        for i, rate in zip(order, _water_fill(self.per_us, [caps[i] for i in order])):
            rates[i] = rate
        return rates

    def _reschedule(self) -> None:
        if self.left and min(self.left) <= 1e-6:
            going = [left > 1e-6 for left in self.left]
            for done, goes in zip(self.done, going):
                if not goes:
                    done.succeed()
            self.left = list(itertools.compress(self.left, going))
            self.caps = list(itertools.compress(self.caps, going))
            self.done = list(itertools.compress(self.done, going))
        self.rates = self._fair_rates()
        if not self.left:
            return
        self.generation += 1
        wait = min(map(_ticks, self.left, self.rates))
        at(self.env, self.env.now + max(1, wait), lambda _, g=self.generation: self._wake(g))

    def _wake(self, generation: int) -> None:
        if generation == self.generation:                   # no start or end since: this is the next end
            self._advance()
            self._reschedule()


def _ticks(left: float, rate: float) -> int:
    """Whole µs until a flow with ``left`` bits at ``rate`` bits per µs has sent them."""
    return math.ceil(left / rate - 1e-9)


WATER_KEPT_FLOWS = 512    # shares kept for up to this many flows of one cap: at most ~17 MB in all


def _water_fill(per_us: float, caps: list[float]) -> list[float]:
    """Shares of ``per_us`` for flows taken in this order (caps rising): each flow an equal share of what
    is left, or its cap if that is less."""
    rates, left, n = [], per_us, len(caps)
    for j, cap in enumerate(caps):
        rates.append(min(cap, left / (n - j)))
        left -= rates[-1]
    return rates


@functools.lru_cache(maxsize=2 * WATER_KEPT_FLOWS)
def _water_filled(per_us: float, cap: float, n: int) -> tuple[float, ...]:
    """``_water_fill`` of n flows of one cap, kept."""
    return tuple(_water_fill(per_us, [cap] * n))


class Network:
    """Transfers of one simulation run: each device's link, and the cells devices share."""

    def __init__(self, env: simpy.Environment, spec: NetworkSpec):
        self.env, self.spec = env, spec
        self.cells: dict[tuple[int, bool], SharedLink] = {}

    @property
    def exact_ends(self) -> bool:
        """Whether a transfer's end is known when it starts (``on_start``): on links of their own, not in a
        cell shared with other devices."""
        return self.spec.cell is None

    def _cell(self, index: int, up: bool) -> SharedLink:
        key = (index // self.spec.cell.devices, up)
        if key not in self.cells:
            bps = (self.spec.cell.uplink_mbps if up else self.spec.cell.downlink_mbps) * 1e6
            self.cells[key] = SharedLink(self.env, bps)
        return self.cells[key]

    def transfer(self, link: DeviceLink, index: int, nbytes: int, up: bool, rng: np.random.Generator,
                 on_start: Callable[[int], None] | None = None, start_us: int | None = None) -> simpy.Event:
        """The event of one upload (up) or download of nbytes for device ``index`` ending, starting now or
        at ``start_us``, which may lie up to the link's delay in the past (a reply the lockstep hands over
        after it left the cloud, ``min_delay_us``). On a link of its own the end is known now, so it is one
        timeout; in a cell, a process through the cell's fair share.

        ``on_start`` is told, once the transfer's delay and losses are drawn, a time it cannot end
        before (its end, when ``exact_ends``)."""
        env = self.env
        delay, lost = link.propagation_us(rng), link.lost_attempts(rng)
        start = int(env.now) if start_us is None else start_us
        if start + delay < env.now:
            raise ValueError(f"a transfer starting at {start} µs cannot have crossed a {delay} µs delay by "
                             f"{env.now} µs")
        if self.spec.cell is None:
            end = self._exclusive_end(link, nbytes, up, start + delay, lost)
            if on_start is not None:
                on_start(end)
            return env.timeout(end - env.now)
        if on_start is not None:
            on_start(self._earliest_cell_end(link, nbytes, up, delay, lost))
        return env.process(self._through_cell(link, index, nbytes, up, start + delay, lost))

    def exclusive_end(self, link: DeviceLink, nbytes: int, up: bool, rng: np.random.Generator, start_us: int) -> int:
        """The end of a transfer on a link of its own starting at ``start_us`` (now or later), drawing its delay
        and losses from ``rng`` as ``transfer`` would."""
        assert self.spec.cell is None and start_us >= self.env.now
        delay, lost = link.propagation_us(rng), link.lost_attempts(rng)
        return self._exclusive_end(link, nbytes, up, start_us + delay, lost)

    @staticmethod
    def _exclusive_end(link: DeviceLink, nbytes: int, up: bool, t: int, lost: int) -> int:
        """From ``t`` (the delay crossed): every attempt's transmission, and a timeout after each lost one."""
        for attempt in range(lost + 1):
            t += link.tx_us(nbytes, up, t) + (link.rto_us if attempt < lost else 0)
        return t

    def _through_cell(self, link: DeviceLink, index: int, nbytes: int, up: bool, at_us: int, lost: int):
        env = self.env
        yield env.timeout(at_us - env.now)
        for attempt in range(lost + 1):
            cap = link.bps(up) if link.trace is None else nbytes * 8 * 1e6 / max(1, link.tx_us(nbytes, up, env.now))
            yield self._cell(index, up).transmit(nbytes * 8, cap)
            if attempt < lost:
                yield env.timeout(link.rto_us)

    def _earliest_cell_end(self, link: DeviceLink, nbytes: int, up: bool, delay: int, lost: int) -> int:
        """Alone in the cell at best."""
        t = int(self.env.now) + delay + lost * link.rto_us
        if link.trace is None:
            cell_bps = (self.spec.cell.uplink_mbps if up else self.spec.cell.downlink_mbps) * 1e6
            t += (lost + 1) * int(nbytes * 8 * 1e6 / min(link.bps(up), cell_bps))
        return t
