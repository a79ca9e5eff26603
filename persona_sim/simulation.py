"""The SimPy simulation of many devices, for one shard, under any transport.

Virtual time is SimPy's, in integer microseconds; no wall clock enters the
results. Real adaptation requests reach the cloud through a ``Transport``
(real gRPC, or in-process) inside a conservative safe window:

    The driver runs the clock from the next event time t to t + Δ, where Δ is
    below the shortest possible upload. Every request issued in that window is
    sent to the cloud in one batch, and its reply is back before the clock
    passes t + Δ, i.e. before any request could even have reached the cloud in
    virtual time. Replies are applied in virtual-time order by SimPy, never in
    wall-clock arrival order.

So results do not depend on how fast the cloud answers, on streams, or on how
devices are spread over processes.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import simpy

from .codec import request_wire_bytes
from .config import ADAPTIVE_METHODS, GROUP_METHODS, Scenario
from .device import DevicePlan, DeviceState, device_rng, prototype_params
from .bundle import Bundle, item_matrix
from .messages import AdaptRequest, EditResult, RequestError
from .metrics import rank_metrics
from .netsim import DeviceLink, Network, Trace, device_link

MIN_REQUEST_BYTES = 16  # no AdaptRequest frame is smaller: device id, seq, time, method, one item


class Transport(Protocol):
    async def exchange(self, requests: list[AdaptRequest]) -> list[EditResult | RequestError]:
        """Send requests to the cloud; return one reply per request (any order)."""


@dataclass
class Recorder:
    """Rows of simulated results, kept apart from wall-clock diagnostics."""

    predictions: list[tuple] = field(default_factory=list)   # see results.PREDICTION_COLUMNS
    adaptations: list[tuple] = field(default_factory=list)   # see results.ADAPTATION_COLUMNS
    wall: list[tuple] = field(default_factory=list)          # (method, device_id, seq, cloud_compute_ns)


class _Pending:
    __slots__ = ("request", "reply")

    def __init__(self, request: AdaptRequest):
        self.request = request
        self.reply: EditResult | RequestError | None = None


def safe_window_us(links: dict[int, DeviceLink]) -> int:
    """Δ: strictly below the shortest upload any of these devices' requests can have. (A shard's own
    bound: results never depend on Δ, only how many requests share a frame.)"""
    return max(1, min((l.min_upload_us(MIN_REQUEST_BYTES) for l in links.values()), default=2) - 1)


def device_links(scenario: Scenario, plans: list[DevicePlan]) -> dict[int, DeviceLink]:
    spec = scenario.network
    trace = Trace.load(spec.trace) if spec.trace else None
    return {p.index: device_link(spec, scenario.seed, p.index, trace) for p in plans}


def compute_us(scenario: Scenario, method: str, reply: EditResult) -> int:
    """Cloud compute time charged in virtual time: the model (a base cost plus one per prototype
    editor evaluated: N_M for Persona (m)'s groups), or the measured time."""
    if scenario.cloud.compute == "measured":
        return max(1, reply.compute_ns // 1000)
    prototypes = scenario.persona.prototypes if method in GROUP_METHODS else 1
    return int(round((scenario.cloud.base_ms + scenario.cloud.per_prototype_ms * prototypes) * 1000))


class MethodRun:
    """One method over one shard's devices in a fresh SimPy environment."""

    def __init__(self, scenario: Scenario, bundle: Bundle, plans: list[DevicePlan], method: str,
                 recorder: Recorder, adaptive: bool, links: dict[int, DeviceLink]):
        self.scenario, self.plans, self.method, self.rec = scenario, plans, method, recorder
        self.adaptive, self.links = adaptive, links
        self.env = simpy.Environment()
        self.net = Network(self.env, scenario.network)
        self.item_emb = item_matrix(bundle)
        self.proto = prototype_params(bundle)
        self.outbox: list[_Pending] = []
        self.events_done = 0
        self.apply_us = int(round(scenario.devices.apply_ms * 1000))
        for plan in plans:
            self.env.process(self._device(plan))

    def _device(self, plan: DevicePlan):
        env, every = self.env, self.scenario.devices.policy.every
        state = DeviceState(dict(self.proto))
        net_rng = device_rng(self.scenario.seed, plan.index, 3)
        for e in range(len(plan.positions)):
            yield env.timeout(int(plan.times_us[e]) - env.now)
            m = rank_metrics(state.scores(plan, e, self.item_emb)[None])
            self.rec.predictions.append((
                self.method, plan.device_id, e, int(env.now), int(plan.items[plan.positions[e]]), state.edit_seq,
                int(m["rank"][0]), float(m["hr@5"][0]), float(m["hr@10"][0]), float(m["ndcg@5"][0]),
                float(m["ndcg@10"][0]), float(m["auc"][0])))
            self.events_done += 1
            if self.adaptive and (e + 1) % every == 0 and not state.in_flight:   # one request in flight at most
                env.process(self._adapt(plan, state, e, net_rng))

    def _adapt(self, plan: DevicePlan, state: DeviceState, event: int, net_rng: np.random.Generator):
        env = self.env
        state.in_flight = True
        req = AdaptRequest(plan.device_id, state.next_seq, int(env.now), self.method,
                           plan.window_after(event, self.scenario.persona.window))
        state.next_seq += 1
        pending = _Pending(req)
        self.outbox.append(pending)
        issued = int(env.now)
        bytes_up = request_wire_bytes(req)
        link = self.links[plan.index]
        yield env.process(self.net.transfer(link, plan.index, bytes_up, True, net_rng))
        upload_done = int(env.now)
        reply = pending.reply
        assert reply is not None, "safe window violated: reply not back before the upload finished"
        if isinstance(reply, RequestError):
            self.rec.adaptations.append((self.method, plan.device_id, req.seq, "error:" + reply.code, -1, issued,
                                         upload_done, upload_done, upload_done, None, None, None, bytes_up, 0, None))
            state.in_flight = False
            return
        enqueued = compute_start = upload_done          # no cloud queue yet: capacity is unbounded
        yield env.timeout(compute_us(self.scenario, self.method, reply))
        compute_end = int(env.now)
        yield env.process(self.net.transfer(link, plan.index, reply.wire_bytes, False, net_rng))
        download_done = int(env.now)
        yield env.timeout(self.apply_us)
        applied = int(env.now)
        state.params = {k: v.astype(np.float64) for k, v in reply.params.items()}
        state.edit_seq, state.prototype_id, state.in_flight = req.seq, reply.prototype_id, False
        self.rec.adaptations.append((self.method, plan.device_id, req.seq, "ok", reply.prototype_id, issued,
                                     upload_done, enqueued, compute_start, compute_end, download_done, applied,
                                     bytes_up, reply.wire_bytes, reply.edit_norm))
        self.rec.wall.append((self.method, plan.device_id, req.seq, reply.compute_ns))

    async def run(self, transport: Transport | None, window_us: int,
                  progress: Callable[[int], None] | None = None) -> None:
        env = self.env
        while True:
            nxt = env.peek()
            if nxt == float("inf"):
                break
            env.run(until=nxt + window_us)
            # SimPy re-queues the event that stopped run() at `now` (to finish its callbacks on
            # resume); it has none left. Pop it, or peek() would return `now` forever.
            env.step()
            if self.outbox:
                batch, self.outbox = self.outbox, []
                replies = await transport.exchange([p.request for p in batch])
                by_key = {(r.device_id, r.seq): r for r in replies}
                for p in batch:
                    p.reply = by_key.get((p.request.device_id, p.request.seq)) or RequestError(
                        p.request.device_id, p.request.seq, "INTERNAL", "the cloud sent no reply for this request")
            if progress is not None:
                progress(self.events_done)


async def simulate(scenario: Scenario, bundle: Bundle, plans: list[DevicePlan], transport: Transport | None,
                   progress: Callable[[str, int, int], None] | None = None) -> Recorder:
    """Run every method of the scenario over these devices; return the recorded rows."""
    rec = Recorder()
    links = device_links(scenario, plans)
    window = safe_window_us(links)
    total = sum(len(p.positions) for p in plans)
    for method in scenario.methods:
        adaptive = method in ADAPTIVE_METHODS
        if adaptive and transport is None:
            raise ValueError(f"method {method!r} needs a transport to the cloud")
        run = MethodRun(scenario, bundle, plans, method, rec, adaptive, links)
        cb = (lambda done, m=method: progress(m, done, total)) if progress else None
        await run.run(transport if adaptive else None, window, cb)
    return rec
