"""The SimPy simulation of one shard's devices, under any transport.

Virtual time is SimPy's, in integer microseconds; no wall clock enters the
results. A device predicts at each replayed interaction (its processor busy for
``infer``), and every ``policy.every`` interactions asks the cloud for an edit:

    issued → upload over its link (and cell) → [the cloud: ingress, queue, batch compute, egress]
           → download over its link (and cell) → apply (waits for the processor) → applied

The cloud's part is simulated by the cloud, for every shard at once; this
shard's clock advances in lockstep rounds with it (``persona_sim.sim.lockstep``):
run every event before the round time, report the requests that reached the
cloud and a lower bound on the next one, receive the replies that leave the
cloud before the next round time. Replies are applied in virtual-time order by
SimPy, never in wall-clock arrival order, so results depend neither on how fast
the cloud answers nor on how devices are spread over processes. An edit sent
pending (its values come in a later round, ``persona_sim.sim.lockstep``) is
applied on time all the same; the predictions made with it are scored, and its
adaptation recorded, once its values have come.
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import simpy

from .. import methods
from ..errors import NodeError, ProtocolError, RunRestart
from ..scenario.schema import Scenario
from ..train.bundle import Bundle, item_matrix
from ..wire.codec import request_wire_bytes
from ..wire.messages import AdaptRequest, Arrival, EditResult, RequestError, RoundReply, RoundReport, device_index
from .cloudsim import run_until
from .device import DevicePlan, DeviceState, device_rng, learn_on_device, prototype_params
from .device_compute import DeviceCompute, device_compute
from .netsim import DeviceLink, Network, Trace, device_link
from .scoring import Scorer, Stretch

MIN_REQUEST_BYTES = 16  # no AdaptRequest frame is smaller: device id, seq, time, method, one item
MAX_RESTARTS = 5        # a method's run started again this often after the cloud lost it: give up
REPORT_AHEAD = True     # on links of their own, an idle device's next request is reported before it is issued
AHEAD_PER_ROUND = 256   # requests a shard reports ahead per round, at most (a round's burst of memory stays small)


class Transport(Protocol):
    async def round(self, report: RoundReport) -> RoundReply:
        """Report one lockstep round to the cloud; return its reply once every shard has reported."""


@dataclass
class _Unvalued:
    """An edit a device applied before its values came: the stretches predicted with it, its adaptation row."""

    state: DeviceState
    row: tuple                                          # ADAPTATION_COLUMNS, prototype_id and edit_norm left 0
    stretches: list[Stretch] = field(default_factory=list)   # predicted with it, to score once it has values


@dataclass
class _Ahead:
    """A request reported before its device issues it (``MethodRun._report_ahead``)."""

    event: int                  # the interaction that issues it
    request: AdaptRequest
    upload_bytes: int
    upload_end: int             # its arrival at the cloud
    reply: simpy.Event          # succeeds with the cloud's reply (which may come before the request is issued)


@dataclass
class Recorder:
    """Rows of simulated results, kept apart from wall-clock diagnostics; with a ``sink``, handed to it in
    chunks of ``chunk`` rows as they come (so memory stays flat), else kept."""

    predictions: list[tuple] = field(default_factory=list)   # see results.PREDICTION_COLUMNS
    adaptations: list[tuple] = field(default_factory=list)   # see results.ADAPTATION_COLUMNS
    wall: list[tuple] = field(default_factory=list)          # see results.WALL_COLUMNS
    rounds: list[tuple] = field(default_factory=list)        # see results.ROUND_COLUMNS (less the shard)
    sink: Callable[[str, list[tuple]], None] | None = None
    chunk: int = 20_000

    def flush(self, force: bool = False) -> None:
        if self.sink is None:
            return
        for table in ("predictions", "adaptations", "wall", "rounds"):
            rows = getattr(self, table)
            if rows and (force or len(rows) >= self.chunk):
                self.sink(table, rows)
                setattr(self, table, [])

    def discard(self) -> None:
        """Drop the rows not yet handed to the sink (a method that starts again)."""
        for table in ("predictions", "adaptations", "wall", "rounds"):
            setattr(self, table, [])


def device_links(scenario: Scenario, plans: list[DevicePlan]) -> dict[int, DeviceLink]:
    spec = scenario.network
    trace = Trace.load(spec.trace) if spec.trace else None
    return {p.index: device_link(spec, scenario.seed, p.index, trace) for p in plans}


class MethodRun:
    """One method over one shard's devices in a fresh SimPy environment."""

    def __init__(self, scenario: Scenario, bundle: Bundle, plans: list[DevicePlan], method: str,
                 recorder: Recorder, links: dict[int, DeviceLink]):
        self.scenario, self.bundle, self.plans, self.method, self.rec = scenario, bundle, plans, method, recorder
        spec = methods.get(method)
        self.adaptive, self.links = spec.asks_cloud, links
        self.part = spec.device(scenario) if spec.device is not None else None   # learns on the device
        self.env = simpy.Environment()
        self.net = Network(self.env, scenario.network)
        self.scorer = Scorer(method, item_matrix(bundle), self._emit)
        self.proto = prototype_params(bundle)
        self.shapes = {k: v.shape for k, v in self.proto.items()}   # what an edit's values must hold
        self.compute: dict[int, DeviceCompute] = {
            p.index: device_compute(scenario.devices.compute, scenario.seed, p.index) for p in plans}
        self.arrived: list[Arrival] = []                          # to report: reached the cloud, or will
        self.waiting: dict[tuple[str, int], simpy.Event] = {}     # (device, seq) at the cloud -> its reply
        self.upload_bound: dict[int, int] = {}                    # device -> earliest end of its upload
        self.awaiting: set[tuple[str, int]] = set()               # edits received pending, values not yet
        self.values: dict[tuple[str, int], EditResult] = {}       # values that came before their edit was applied
        self.unvalued: dict[tuple[str, int], _Unvalued] = {}      # edits applied before their values came
        self.events_done = 0
        self.states = {p.index: DeviceState(self.proto) for p in plans}   # replaced, never changed in place
        self.net_rngs = {p.index: device_rng(scenario.seed, p.index, 3) for p in plans}
        # On links of their own a device's next request is known once it is idle: reported ahead (see run)
        self.ahead = REPORT_AHEAD and self.adaptive and self.net.exact_ends
        self.pending_ahead: dict[int, _Ahead] = {}                 # device -> its request reported ahead
        self.idle: set[int] = set()                                # idle devices whose next request is not reported
        if self.ahead:
            self._device_triggers()
        else:
            self._triggers()
        for plan in plans:
            self.env.process(self._device(plan))

    def _triggers(self) -> None:
        """Every interaction that may issue a request, by time, with the earliest its request could reach
        the cloud (suffix minima, so one lookup bounds every trigger from a time on)."""
        every = self.scenario.devices.policy.every
        times, bounds = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        for p in self.plans:
            t = p.times_us[every - 1:: every].astype(np.int64)
            times.append(t)
            bounds.append(t + self.links[p.index].min_upload_us(MIN_REQUEST_BYTES))
        t, b = np.concatenate(times), np.concatenate(bounds)
        order = np.argsort(t, kind="stable")
        self.trigger_t = t[order]
        self.trigger_bound = np.minimum.accumulate(b[order][::-1])[::-1]

    def _device_triggers(self) -> None:
        """Per device, its interactions that may issue a request (times, and the earliest each request could
        reach the cloud); a heap of each device's next trigger not reported ahead."""
        every = self.scenario.devices.policy.every
        self.plan_of = {p.index: p for p in self.plans}
        self.trig_t, self.min_up, self.next_trig = {}, {}, {}   # a trigger's bound: its time + min_up
        self.heap: list[tuple[int, int, int]] = []          # (bound, device, trigger)
        for p in self.plans:
            t = np.asarray(p.times_us[every - 1:: every], dtype=np.int64)     # a view: no copy per device
            self.trig_t[p.index], self.next_trig[p.index] = t, 0
            self.min_up[p.index] = self.links[p.index].min_upload_us(MIN_REQUEST_BYTES)
            if len(t):
                self.heap.append((int(t[0]) + self.min_up[p.index], p.index, 0))
                self.idle.add(p.index)
        heapq.heapify(self.heap)

    def _report_ahead(self) -> None:
        """Every idle device issues its request at its next trigger whatever happens before (only issuing makes
        it busy), and on a link of its own that request's arrival at the cloud is exact: report it now, so the
        cloud's horizon is bounded only by requests that are not yet certain. Only the idle devices whose next
        trigger lies below the least uncertain bound are reported (in bound order; each one's following
        trigger becomes uncertain): the cloud's horizon cannot pass that bound this round, so reporting the
        others could not move it, and they stay idle, unreported, until it can. At most ``AHEAD_PER_ROUND`` a
        round: the bound then stops at the next one's trigger, so a round's replies, values and bookkeeping stay
        a few hundred requests' worth (BENCHMARKS.md: the peak memory this keeps down).
        The upload's delay and losses are drawn now from the device's stream, after everything its last
        adaptation drew, as at its issue."""
        every, window = self.scenario.devices.policy.every, self.scenario.persona.window
        for _ in range(AHEAD_PER_ROUND):
            if self._next_unreported_bound() is None or self.heap[0][1] not in self.idle:
                break
            _, d, k = heapq.heappop(self.heap)                 # its next trigger, at or after now
            self.idle.discard(d)
            t, plan, state, event = self.trig_t[d], self.plan_of[d], self.states[d], every - 1 + k * every
            req = AdaptRequest(plan.device_id, state.next_seq, int(t[k]), self.method, plan.window_after(event, window))
            state.next_seq += 1
            size = request_wire_bytes(req)
            end = self.net.exclusive_end(self.links[d], size, True, self.net_rngs[d], int(t[k]))
            reply = self.waiting[(req.device_id, req.seq)] = self.env.event()
            self.pending_ahead[d] = _Ahead(event, req, size, end, reply)
            self.arrived.append(Arrival(req, end))
            self.next_trig[d] = k + 1
            if k + 1 < len(t):
                heapq.heappush(self.heap, (int(t[k + 1]) + self.min_up[d], d, k + 1))

    def _next_unreported_bound(self) -> int | None:
        """The least bound of any device's next trigger not reported ahead (triggers passed are skipped: a
        request issued at one was reported as its upload started)."""
        heap, now = self.heap, self.env.now
        while heap:
            bound, d, k = heap[0]
            if k != self.next_trig[d]:
                heapq.heappop(heap)
            elif self.trig_t[d][k] < now:
                k = int(np.searchsorted(self.trig_t[d], now, side="left"))
                self.next_trig[d] = k
                if k < len(self.trig_t[d]):
                    heapq.heapreplace(heap, (int(self.trig_t[d][k]) + self.min_up[d], d, k))
                else:
                    heapq.heappop(heap)
            else:
                return bound
        return None

    def next_arrival_us(self) -> int | None:
        """No request of this shard not yet reported reaches the cloud before this (None: none will)."""
        if self.ahead:
            bound, nxt = self._next_unreported_bound(), self.env.peek()
            return None if bound is None or nxt == math.inf else max(int(nxt), bound)
        i = int(np.searchsorted(self.trigger_t, self.env.now, side="left"))
        bounds = list(self.upload_bound.values()) + ([int(self.trigger_bound[i])] if i < len(self.trigger_t) else [])
        nxt = self.env.peek()
        if not bounds or nxt == math.inf:
            return None
        return max(int(nxt), min(bounds))     # an arrival is an event, so never before the next one

    def _device(self, plan: DevicePlan):
        """The device's clock visits only the interactions that may adapt, and its last one; the predictions
        in between are made in stretches (``_predict``) whenever its layers are about to change."""
        env, every = self.env, self.scenario.devices.policy.every
        state, net_rng = self.states[plan.index], self.net_rngs[plan.index]
        n = len(plan.positions)
        visits = list(range(every - 1, n, every)) if self.adaptive or self.part is not None else []
        for e in visits + ([n - 1] if n and (not visits or visits[-1] != n - 1) else []):
            yield env.timeout(int(plan.times_us[e]) - env.now)
            self._predict(plan, state)
            if visits and (e + 1) % every == 0 and not state.in_flight:         # one adaptation in flight at most
                if self.adaptive:
                    env.process(self._adapt(plan, state, e, net_rng))
                else:
                    env.process(self._learn(plan, state, e))

    def _predict(self, plan: DevicePlan, state: DeviceState) -> None:
        """Every event up to now not yet predicted, with the layers in use: one batched scoring per stretch.
        An event at the same instant as a change of layers is predicted with the old ones."""
        lo, hi = state.predicted, int(np.searchsorted(plan.times_us, self.env.now, side="right"))
        if hi <= lo:
            return
        state.predicted = hi
        infer_us, busy = self.compute[plan.index].infer_us, state.busy_until
        for t in plan.times_us[lo:hi].tolist():
            busy = max(busy, t) + infer_us
        state.busy_until = busy
        stretch = state.stretch(plan, lo, hi)
        if state.params is None:                  # its layers' values have not come yet
            self.unvalued[(plan.device_id, state.edit_seq)].stretches.append(stretch)
        else:
            self.scorer.add(stretch)
        self.events_done += hi - lo

    def _emit(self, rows: list[tuple]) -> None:
        self.rec.predictions.extend(rows)
        self.rec.flush()

    def _learn(self, plan: DevicePlan, state: DeviceState, event: int):
        """An on-device method: the device trains on what it has seen (real steps, now), and pays for them in
        virtual time on its processor (steps × its fine-tuning step time × the step's share of a whole-model
        step, ``methods.base.DevicePart.step_share``); it predicts with its old layers until they are done."""
        env = self.env
        state.in_flight, seq = True, state.next_seq
        state.next_seq += 1
        issued = int(env.now)
        update = learn_on_device(self.bundle, self.scenario, self.part, plan, event, seq,
                                 self.compute[plan.index].finetune_step_us)
        state.busy_until = max(state.busy_until, issued) + update.cost_us
        yield env.timeout(state.busy_until - env.now)
        applied = int(env.now)
        self._predict(plan, state)
        state.params, state.edit_seq, state.in_flight = update.params, seq, False
        if update.own_h is not None:
            state.own_h = update.own_h
        self.rec.adaptations.append((self.method, plan.device_id, seq, "ok", 0, issued, issued, issued, issued,
                                     issued, issued, issued, applied, 0, 0, None, update.cost_us))

    def _adapt(self, plan: DevicePlan, state: DeviceState, event: int, net_rng: np.random.Generator):
        env = self.env
        state.in_flight = True
        self.idle.discard(plan.index)
        ahead = self.pending_ahead.pop(plan.index, None)
        link = self.links[plan.index]
        if ahead is not None:               # reported already, its upload drawn (_report_ahead)
            assert ahead.event == event and ahead.request.issued_us == env.now, (plan.device_id, event, ahead)
            req = ahead.request
            issued, bytes_up, reply = int(env.now), ahead.upload_bytes, ahead.reply
            yield env.timeout(ahead.upload_end - env.now)
        else:
            req = AdaptRequest(plan.device_id, state.next_seq, int(env.now), self.method,
                               plan.window_after(event, self.scenario.persona.window))
            state.next_seq += 1
            issued, bytes_up = int(env.now), request_wire_bytes(req)
            reply = self.waiting[(req.device_id, req.seq)] = env.event()

            def on_start(end: int) -> None:     # exact: reported now, so the cloud knows it a round sooner
                if self.net.exact_ends:
                    self.arrived.append(Arrival(req, end))
                else:
                    self.upload_bound[plan.index] = end
            yield self.net.transfer(link, plan.index, bytes_up, True, net_rng, on_start=on_start)
        upload_done = int(env.now)
        if not self.net.exact_ends:
            del self.upload_bound[plan.index]
            self.arrived.append(Arrival(req, upload_done))
        reply = yield reply                 # it may have come back while the upload was still under way
        if isinstance(reply, RequestError):
            self.rec.adaptations.append((self.method, plan.device_id, req.seq, "error:" + reply.code, -1, issued,
                                         upload_done, None, None, None, None, None, None, bytes_up, 0, None, 0))
            self._idle(plan.index, state)
            return
        yield self.net.transfer(link, plan.index, reply.wire_bytes, False, net_rng,
                                start_us=max(reply.departed_us, int(env.now) - link.delay_us))
        download_done = int(env.now)
        apply_us = self.compute[plan.index].apply_us
        self._predict(plan, state)                       # the processor serves what came before, first
        state.busy_until = max(state.busy_until, download_done) + apply_us
        yield env.timeout(state.busy_until - env.now)
        applied = int(env.now)
        self._predict(plan, state)
        key = (plan.device_id, req.seq)
        values = reply if reply.params is not None else self.values.pop(key, None)
        state.edit_seq = req.seq
        self._idle(plan.index, state)
        row = (self.method, plan.device_id, req.seq, "ok", 0, issued, upload_done, reply.enqueued_us,
               reply.compute_start_us, reply.compute_end_us, reply.departed_us, download_done, applied, bytes_up,
               reply.wire_bytes, 0.0, apply_us)
        if values is None:
            state.params = None
            self.unvalued[key] = _Unvalued(state, row)
        else:
            state.params = {**(state.params or {}), **values.params}    # a delta edit leaves unchanged layers out
            self._record(row, values)

    def _idle(self, index: int, state: DeviceState) -> None:
        state.in_flight = False
        if self.ahead:
            self.idle.add(index)

    def _record(self, row: tuple, values: EditResult) -> None:
        self.rec.adaptations.append(row[:4] + (values.prototype_id,) + row[5:15] + (values.edit_norm,) + row[16:])
        self.rec.wall.append((self.method, values.device_id, values.seq, values.compute_ns))

    def _valued(self, values: EditResult) -> None:
        """An edit's values have come: score what was predicted with it, record it, or keep them for its apply."""
        key = (values.device_id, values.seq)
        if key not in self.awaiting:
            raise ProtocolError("BAD_FRAME", f"the cloud sent values for {key[0]} seq {key[1]}, whose edit is not "
                                             "waiting for them")
        shapes = {k: v.shape for k, v in values.params.items()}
        if shapes != self.shapes:
            raise ProtocolError("BAD_FRAME", f"the values of {key[0]} seq {key[1]}'s edit have layers {shapes}, "
                                             f"not {self.shapes}")
        self.awaiting.discard(key)
        waiting = self.unvalued.pop(key, None)
        if waiting is None:
            self.values[key] = values
            return
        for stretch in waiting.stretches:
            stretch.params = values.params
            self.scorer.add(stretch)
        state = waiting.state
        if state.params is None and state.edit_seq == values.seq:
            state.params = dict(values.params)
        self._record(waiting.row, values)

    def _deliver(self, reply: RoundReply) -> None:
        for r in reply.results:
            event = self.waiting.pop((r.device_id, r.seq), None)
            if event is None:
                raise ProtocolError("BAD_FRAME", f"the cloud replied for {r.device_id} seq {r.seq}, which is not "
                                                 "waiting for a reply")
            earliest = self.env.now - self.links[device_index(r.device_id)].delay_us   # it cannot have arrived
            if isinstance(r, EditResult) and not earliest <= r.departed_us < (reply.until_us or math.inf):
                raise ProtocolError("BAD_FRAME", f"the cloud's reply for {r.device_id} seq {r.seq} departs at "
                                                 f"{r.departed_us} µs, outside this round [{earliest}, "
                                                 f"{reply.until_us})")
            if isinstance(r, EditResult) and r.params is None:
                self.awaiting.add((r.device_id, r.seq))
            event.succeed(r)
        for values in reply.values:
            self._valued(values)

    async def run(self, transport: Transport | None, progress: Callable[[int], None] | None = None) -> None:
        env, until = self.env, 0
        while self.adaptive and until is not None:
            if self.ahead:
                self._report_ahead()
            report = RoundReport(self.method, until, self.next_arrival_us(), tuple(self.arrived))
            self.arrived = []
            t0 = time.perf_counter_ns()
            reply = await transport.round(report)
            self.rec.rounds.append((self.method, until, len(report.arrivals), len(reply.results),
                                    time.perf_counter_ns() - t0, reply.codec_ns, reply.server_ns, reply.wait_ns))
            self._deliver(reply)
            until = reply.until_us
            run_until(env, math.inf if until is None else until)
            if progress is not None:
                progress(self.events_done)
        run_until(env, math.inf)
        if self.waiting or self.awaiting:
            raise ProtocolError("BAD_FRAME", f"the cloud ended the run of {self.method!r} with {len(self.waiting)} "
                                             f"request(s) unanswered and {len(self.awaiting)} edit(s) without their "
                                             f"values, e.g. {min(self.waiting or self.awaiting)}")
        self.scorer.flush()
        if progress is not None:
            progress(self.events_done)


async def simulate(scenario: Scenario, bundle: Bundle, plans: list[DevicePlan], transport: Transport | None,
                   progress: Callable[[str, int, int], None] | None = None, rec: Recorder | None = None,
                   skip: frozenset[str] = frozenset(), on_method: Callable[[str], None] | None = None,
                   on_restart: Callable[[str], None] | None = None) -> Recorder:
    """Run every method of the scenario (but those in ``skip``, already done) over these devices, recording
    into ``rec``; ``on_method(name)`` after each. Methods never share state, so a run resumed after its
    completed methods simulates exactly what an uninterrupted one would. A method whose run the cloud lost
    (``RunRestart``, raised by the transport once it has a new stream) is simulated again from its start,
    after ``on_restart(name)`` has dropped what the sink took of it."""
    rec = rec if rec is not None else Recorder()
    links = device_links(scenario, plans)
    total = sum(len(p.positions) for p in plans)
    for method in (m for m in scenario.methods if m not in skip):
        cb = (lambda done, m=method: progress(m, done, total)) if progress else None
        for attempt in range(MAX_RESTARTS + 1):
            run = MethodRun(scenario, bundle, plans, method, rec, links)
            if run.adaptive and transport is None:
                raise ValueError(f"method {method!r} needs a transport to the cloud")
            try:
                await run.run(transport if run.adaptive else None, cb)
                break
            except RunRestart as exc:
                rec.discard()
                if on_restart is not None:
                    on_restart(method)
                if attempt == MAX_RESTARTS:
                    raise NodeError(f"gave up on {method!r} after the cloud lost its run {attempt + 1} times; "
                                    f"last: {exc}") from None
        del run                      # its devices' layers go before the next method's devices are built
        rec.flush(force=True)
        if on_method is not None:
            on_method(method)
    return rec
