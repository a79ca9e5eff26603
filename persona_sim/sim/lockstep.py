"""Lockstep rounds: the device shards' clocks and the cloud's advance together.

The cloud's queue and links are shared by every shard's devices, so no shard
can simulate its devices' time at the cloud alone. Instead, every shard runs
its SimPy clock to a common round time ``until``, then reports:

  - every request whose arrival at the cloud (its last byte leaving the
    device's link) is known, with that virtual time: on links of their own, an
    idle device's next request before it is even issued (only issuing makes a
    device busy, so it will ask at its next trigger, and its upload's end is
    exact: ``simulation.MethodRun._report_ahead``), any other as soon as its
    upload starts (the arrival may lie after ``until``); in a shared cell, once
    it has arrived;
  - ``next_arrival_us``: no request of its devices not yet reported can reach
    the cloud before this (a lower bound from its pending uploads in cells and
    its devices' next triggers not reported ahead, at least the least upload
    time away).

Once every shard has reported, the cloud admits the arrivals, feeds them to its
clock (``persona_sim.sim.cloudsim``, which computes the edits of each batch it
forms) and runs it to H = max(until, every
shard's next_arrival_us): every arrival before H is known (arrivals reported
for later wait in its clock), so every reply that leaves the cloud before
H + lookahead is known exactly. Those go back to their
shards with the next round's time, H + lookahead + the least delay of any
device's link: a reply leaving later cannot reach its device before then, so the
shards may run that far. When no shard expects another arrival, the cloud runs
to the end and the shards run to theirs.

How many rounds a run takes depends on how many requests each shard reports
ahead (``simulation.AHEAD_PER_ROUND`` at most per round), so on the sharding; what
is simulated never does: every reply is exact whatever the rounds, so any
sharding simulates exactly the same thing. Results never depend on wall-clock
speed.

Edits' values come later than their times where they can (``Lockstep.defer``:
compute not ``measured``, no delta edits, so an edit's charged size is fixed
by the layers' shapes): a reply is sent pending, with its times and size, and
its values are computed with every other pending edit's once ``FLUSH_ROWS``
wait (and at the run's end), in batched calls of up to ``cloud_engine.MAX_ROWS``
rows, and sent to its shard in that round's reply. A round's clock otherwise
forms batches of a request or two, and each would be a real call; an edit never
depends on its batch company (``CloudEngine.compute``), so the values are the
same bits either way. With ``values_thread`` (the cloud node), they are computed
on a thread of their own while the rounds go on (torch computes without the
GIL), ``FLUSH_ROWS`` at a time, and sent in the first reply after they are done;
once ``BACKLOG_ROWS`` more wait, a round waits for the thread (``Lockstep._behind``),
so rounds never run far ahead of their values. Which round carries a value then
depends on wall-clock speed, what a device computes with it never does (a device
scores what it predicted with an edit once its values come).
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor

from .. import methods
from ..errors import ProtocolError
from ..wire.codec import EditEncoder, fits_frame, frame_cap_error, request_wire_bytes, values_blocks
from ..wire.messages import AdaptRequest, EditResult, Hello, RequestError, RoundReply, RoundReport
from .cloud_engine import CloudEngine
from .cloudsim import BatchCost, CloudClock, Job
from .device import prototype_params
from .netsim import min_delay_us
from .replay import replayed_times

log = logging.getLogger(__name__)

FLUSH_ROWS = 512   # pending edits whose values are computed together (two real calls of MAX_ROWS rows)
BACKLOG_ROWS = 2 * FLUSH_ROWS   # values_thread: pending edits beyond the thread's batch before a round waits for it


class _Session:
    """One method's simulation across all shards."""

    def __init__(self, method: str, shards: int, encoder: EditEncoder, prototypes: int, steps: int):
        self.method, self.shards, self.encoder = method, shards, encoder
        self.clock: CloudClock | None = None
        self.prototypes, self.steps = prototypes, steps        # what one request costs the cloud's model
        self.until = 0                        # the round time every shard reports at
        self.front = 0                        # the cloud has every arrival before this
        self.reports: dict[int, tuple[Hello, RoundReport, int]] = {}
        self.waiting: dict[int, asyncio.Future] = {}
        self.in_cloud: dict[tuple[str, int], int] = {}   # (device, seq) -> its shard, while at the cloud
        self.unvalued: list[tuple[int, AdaptRequest]] = []   # (shard, request): sent pending, values not computed
        self.valuing: Future | None = None    # values_thread: the values of earlier pending edits, being computed


class Lockstep:
    def __init__(self, engine: CloudEngine, defer_values: bool = True, values_thread: bool = False):
        self.engine = engine
        cloud = engine.scenario.cloud
        self.defer = defer_values and cloud.compute != "measured" and cloud.edit_delta == 0
        self.valuer = ThreadPoolExecutor(1, "edit-values") if self.defer and values_thread else None
        self.cost = BatchCost(engine.scenario.cloud, replayed_times(engine.scenario))
        self.reply_delay_us = min_delay_us(engine.scenario.network)   # no reply reaches a device sooner
        self.initial_layers = prototype_params(engine.bundle)          # what every device holds at first
        self.sessions: dict[str, _Session] = {}
        self.connected: dict[tuple[int, int], int] = {}       # (shard, shards) -> open streams
        self.told_late: dict[str, set[int]] = {}  # method -> shards of its aborted run not yet told so

    async def submit(self, hello: Hello, report: RoundReport) -> RoundReply:
        """One shard's report; returns once every shard has reported this round."""
        session = self._session(hello, report)
        if hello.shard_index in session.reports:
            raise ProtocolError("BAD_FRAME", f"shard {hello.shard_index}/{hello.shard_count} reported round "
                                             f"{report.until_us} µs of {report.method!r} twice")
        future = asyncio.get_running_loop().create_future()
        session.reports[hello.shard_index] = (hello, report, time.perf_counter_ns())
        session.waiting[hello.shard_index] = future
        if len(session.reports) == session.shards:
            t0 = time.perf_counter_ns()
            if self._behind(session):         # the values thread is BACKLOG_ROWS behind: its batch first, the
                await asyncio.wait({asyncio.wrap_future(session.valuing), future},   # event loop serving
                                   return_when=asyncio.FIRST_COMPLETED)              # meanwhile
                if future.done() or self.sessions.get(session.method) is not session:   # aborted meanwhile
                    return await future
            try:
                self._round(session, t0)
            except Exception as exc:          # a bug must end this run for every shard, not hang them
                self.sessions.pop(session.method, None)
                for waiting in session.waiting.values():
                    if not waiting.done():
                        waiting.set_exception(ProtocolError(
                            "INTERNAL", f"the cloud failed on the round at {session.until} µs of "
                                        f"{session.method!r}: {exc.__class__.__name__}: {exc}"))
        return await future

    def join(self, hello: Hello) -> None:
        """A shard's stream is open (streams of a shard are counted, so a stray duplicate leaving is harmless)."""
        key = (hello.shard_index, hello.shard_count)
        self.connected[key] = self.connected.get(key, 0) + 1

    def leave(self, hello: Hello) -> None:
        """A shard's stream ended. If no other stream serves that shard, a run it belongs to cannot finish:
        fail the other shards' waits (they get ABORTED) instead of leaving them hanging."""
        key = (hello.shard_index, hello.shard_count)
        self.connected[key] -= 1
        if self.connected[key]:
            return
        del self.connected[key]
        for session in list(self.sessions.values()):
            if session.shards == hello.shard_count:
                self._abort(session, hello, "left")

    def _abort(self, session: _Session, hello: Hello, what: str) -> None:
        """End ``session`` for every shard: those waiting get ABORTED now, the others at their next report."""
        del self.sessions[session.method]
        self.told_late[session.method] = set(range(session.shards)) - set(session.waiting) - {hello.shard_index}
        reason = (f"shard {hello.shard_index}/{hello.shard_count} {what} the run of {session.method!r} "
                  f"at virtual time {session.until} µs")
        log.warning("%s: run aborted", reason)
        for future in session.waiting.values():
            if not future.done():
                future.set_exception(ProtocolError("ABORTED", reason))

    def _session(self, hello: Hello, report: RoundReport) -> _Session:
        late = self.told_late.get(report.method, set())
        if hello.shard_index in late:             # it was mid-round when the run was aborted: tell it now
            late.discard(hello.shard_index)
            if report.until_us != 0:
                raise ProtocolError("ABORTED", f"the run of {report.method!r} was aborted while shard "
                                               f"{hello.shard_index}/{hello.shard_count} computed its round")
        session = self.sessions.get(report.method)
        if session is not None and report.until_us == 0 and session.until != 0:
            self._abort(session, hello, "started again")   # it reconnected before its old stream was seen gone
            session = None
        if session is None:
            if report.until_us != 0:
                raise ProtocolError("BAD_FRAME", f"no run of {report.method!r} is in progress, so the first "
                                                 f"report must be at until_us 0, got {report.until_us}")
            self.engine.check_method(report.method)
            self.engine.forget_sequences(report.method)
            method, cloud = methods.get(report.method), self.engine.scenario.cloud
            session = _Session(report.method, hello.shard_count,
                               EditEncoder(cloud.edit_dtype, cloud.edit_delta, self.initial_layers),
                               method.prototypes(self.engine.scenario), method.steps(self.engine.scenario))
            session.clock = CloudClock(cloud, self.cost, lambda jobs, s=session: self._compute(s, jobs))
            self.sessions[report.method] = session
            log.info("run of %r started (%d shard(s))", report.method, hello.shard_count)
        if hello.shard_count != session.shards:
            raise ProtocolError("BAD_FRAME", f"shard {hello.shard_index}/{hello.shard_count} joined a run of "
                                             f"{session.shards} shards")
        if report.until_us != session.until:
            raise ProtocolError("BAD_FRAME", f"report at until_us {report.until_us}, but the round of "
                                             f"{report.method!r} is at {session.until}")
        return session

    def _compute(self, session: _Session, jobs: list[Job]) -> None:
        """The edits for jobs of batches the clock started (``cloudsim.Compute``), encoded as sent: computed
        now, or (``defer``) pending, with the size their values will have."""
        if self.defer:
            for job in jobs:
                n = session.encoder.wire_bytes(job.device_id, job.seq)
                if fits_frame(n, self.engine.max_frame_bytes):
                    job.result, job.down_bytes = EditResult(job.device_id, job.seq, 0, None, 0.0, wire_bytes=n), n
                else:
                    job.result = frame_cap_error(job.device_id, job.seq, n, self.engine.max_frame_bytes)
            return
        for job, result in zip(jobs, self.engine.compute(session.method, [j.request for j in jobs])):
            job.result = result
            if isinstance(result, EditResult):
                session.encoder.encode(result)
                job.measured_ns, job.down_bytes = result.compute_ns, result.wire_bytes

    def _behind(self, session: _Session) -> bool:
        """Whether the values thread is computing a batch while ``BACKLOG_ROWS`` more wait: then a round waits
        for it, so rounds never run far ahead of their values (taking every waiting edit at once made ever
        larger batches, and replies of 100 MB and more, whenever rounds outran the thread)."""
        return (session.valuing is not None and not session.valuing.done()
                and len(session.unvalued) >= BACKLOG_ROWS)

    def _values(self, session: _Session, finished: bool) -> dict[int, list[bytes]]:
        """The values of edits sent pending, as each shard's reply carries them: of every one once the run has
        finished; else of those computed now that ``FLUSH_ROWS`` wait, or (``values_thread``) of those the
        thread has finished, which takes ``FLUSH_ROWS`` at a time, so no reply carries more than one batch."""
        out: dict[int, list[bytes]] = {}
        if session.valuing is not None and (finished or session.valuing.done()):
            self._merge(session.valuing.result(), out)
            session.valuing = None
        if finished or (len(session.unvalued) >= FLUSH_ROWS and session.valuing is None):
            if self.valuer is None or finished:
                pending, session.unvalued = session.unvalued, []
                self._merge(self._compute_values(session.method, pending), out)
            else:
                pending, session.unvalued = session.unvalued[:FLUSH_ROWS], session.unvalued[FLUSH_ROWS:]
                session.valuing = self.valuer.submit(self._compute_values, session.method, pending)
        return out

    def _compute_values(self, method: str, pending: list[tuple[int, AdaptRequest]]) -> dict[int, list[bytes]]:
        """The values of pending edits (shard, request), computed and encoded (serialized EditValues) by shard:
        on the values thread, the encoding is off the rounds' path too."""
        by_shard: dict[int, list[EditResult]] = {}
        for (i, _), result in zip(pending, self.engine.compute(method, [r for _, r in pending])):
            if not isinstance(result, EditResult):   # its device holds its times already: the run cannot go on
                raise RuntimeError(f"the values of {result.device_id} seq {result.seq}'s edit: {result.message}")
            by_shard.setdefault(i, []).append(result)
        return {i: values_blocks(edits, self.engine.edit_codec, self.engine.max_frame_bytes)
                for i, edits in by_shard.items()}

    @staticmethod
    def _merge(blocks: dict[int, list[bytes]], out: dict[int, list[bytes]]) -> None:
        for i, shard_blocks in blocks.items():
            out.setdefault(i, []).extend(shard_blocks)

    def _round(self, session: _Session, t0: int) -> None:
        """The round every shard has reported, from ``t0`` (perf_counter_ns) on."""
        results: dict[int, list] = {i: [] for i in session.reports}
        jobs = []
        for i, (hello, report, _) in sorted(session.reports.items()):
            valid = []
            for a in report.arrivals:
                r = a.request
                if r.method != session.method or not max(session.front, r.issued_us) <= a.arrived_us:
                    results[i].append(RequestError(r.device_id, r.seq, "BAD_REQUEST", (
                        f"method {r.method!r} arrived_us {a.arrived_us} issued_us {r.issued_us}: a report of "
                        f"{session.method!r} carries arrivals at or after {session.front} µs and their issue")))
                else:
                    valid.append(a)
            admitted, errors = self.engine.admit([a.request for a in valid], hello)
            results[i].extend(errors)                 # refused on arrival: handed back at once
            arrived = {(a.request.device_id, a.request.seq): a.arrived_us for a in valid}
            for r in admitted:
                session.in_cloud[(r.device_id, r.seq)] = i
                jobs.append(Job(r.device_id, r.seq, session.method, arrived[(r.device_id, r.seq)],
                                request_wire_bytes(r), 0, session.prototypes, 0, session.steps, request=r))
        session.clock.add(jobs)
        bounds = [r.next_arrival_us for _, r, _ in session.reports.values() if r.next_arrival_us is not None]
        horizon = max(session.until, min(bounds)) if bounds else math.inf
        for job in session.clock.advance(horizon):
            i, result = session.in_cloud.pop((job.device_id, job.seq)), job.result
            if isinstance(result, EditResult):
                result.enqueued_us, result.compute_start_us = job.enqueued_us, job.start_us
                result.compute_end_us, result.departed_us = job.end_us, job.departed_us
                if result.params is None:
                    session.unvalued.append((i, job.request))
            results[i].append(result)
        finished = horizon == math.inf
        values = self._values(session, finished)
        assert not (finished and session.in_cloud), "the clock ran to the end, so every reply has left"
        session.front = horizon
        session.until = None if finished else int(horizon) + session.clock.lookahead_us + self.reply_delay_us
        server_ns = time.perf_counter_ns() - t0
        reports, waiting = session.reports, session.waiting
        session.reports, session.waiting = {}, {}
        if finished:
            del self.sessions[session.method]
            log.info("run of %r finished", session.method)
        for i, future in waiting.items():
            if not future.done():
                future.set_result(RoundReply(results[i], session.until, server_ns, t0 - reports[i][2],
                                             value_blocks=values.get(i, [])))
