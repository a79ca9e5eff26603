"""The cloud in virtual time: a shared ingress, a batch server with workers, a shared egress.

    arrival (the request's last byte leaves the device's access link)
      → ingress   the cloud's inbound capacity, shared max-min fairly by the requests crossing it
      → queue     first come, first served
      → compute   a free worker takes up to ``max_batch`` queued requests (all that reached the queue by
                  that instant) and computes them as one batch
      → egress    the cloud's outbound capacity, shared fairly by the replies crossing it
      → departure (the reply starts down the device's access link)

Each link is crossed store-and-forward: a message enters the next link once it
has left the previous one.

Every shard's requests meet here, so this runs once, in the cloud node, and the
device shards advance in lockstep with it (``persona_sim.sim.lockstep``). Lockstep
needs the clock to answer exactly with partial knowledge, which the cost floor
gives: no batch computes in under ``lookahead_us``. Knowing every arrival before
H therefore fixes every batch that starts before H, hence every compute end
before H + lookahead_us, hence every departure before H + lookahead_us. The
clock keeps two SimPy environments for that: ``front`` (ingress, queue,
workers) runs to H, ``back`` (egress) to H + lookahead_us; a batch's start in
the front schedules its replies' egress in the back.

Every batch the clock forms is computed for real (``compute``, the cloud's editor). In ``measured``
mode a batch is computed when it starts, since its time is what it is charged; otherwise the batches
that start in one ``advance`` are handed to ``compute`` after the front has run, before the back needs
their sizes — which the lockstep answers with sizes alone and computes the values later, many rounds'
edits at once (``persona_sim.sim.lockstep``; a request's edit never depends on its batch company).

Compute time of a batch of B requests that each evaluate P prototype editors (or run S fine-tuning steps):
  model      base_ms + B · (per_request_ms + P · per_prototype_ms + S · per_step_ms)
  measured   base_ms + the median wall time of the last MEASURED_RUNS real batches of the same
             method and size (this one included), so one host hiccup does not become a slow batch
  replay     base_ms + the times a logged run measured for the same requests
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable

import simpy

from ..scenario.schema import CloudSpec
from .netsim import SharedLink, at


@dataclass
class Job:
    """One request inside the cloud; the stage times are filled in as it goes."""

    device_id: str
    seq: int
    method: str
    arrived_us: int
    up_bytes: int
    down_bytes: int
    prototypes: int            # editors one request evaluates (1; N_M for group methods)
    measured_ns: int           # wall time of its real computation (measured and replay modes)
    steps: int = 0             # fine-tuning steps one request runs (cloud-finetune)
    request: object = None     # what ``compute`` needs to answer it (an AdaptRequest)
    result: object = None      # its answer, set by ``compute`` (an EditResult or a RequestError)
    enqueued_us: int = -1
    start_us: int = -1
    end_us: int = -1
    departed_us: int = -1

    @property
    def key(self) -> tuple[int, str, int]:
        return self.arrived_us, self.device_id, self.seq


def run_until(env: simpy.Environment, t: float) -> None:
    """Process every event before ``t``; the clock then reads ``t`` (or stays, if already there)."""
    if t == math.inf:
        env.run()
    elif t > env.now:
        env.run(until=t)
        env.step()   # SimPy re-queues the event that stopped run() at `now`; pop it


MEASURED_RUNS = 9   # `measured` mode: a batch is charged the median of this many batches of its size


class BatchCost:
    """A batch's compute time in µs, and the least any batch can take (the lockstep lookahead)."""

    def __init__(self, spec: CloudSpec, replayed_ns: Callable[[Job], int] | None = None):
        self.spec, self.replayed_ns = spec, replayed_ns
        self.lookahead_us = max(1, int(round(spec.base_ms * 1000)))
        self.recent: dict[tuple, deque] = defaultdict(lambda: deque(maxlen=MEASURED_RUNS))   # (method, size) -> ns

    def __call__(self, batch: list[Job]) -> int:
        s = self.spec
        if s.compute == "model":
            ms = s.base_ms + sum(s.per_request_ms + j.prototypes * s.per_prototype_ms + j.steps * s.per_step_ms
                                 for j in batch)
            return max(self.lookahead_us, int(round(ms * 1000)))
        if s.compute == "replay":
            return self.lookahead_us + sum(self.replayed_ns(j) for j in batch) // 1000
        recent = self.recent[(batch[0].method, len(batch))]
        recent.append(sum(j.measured_ns for j in batch))
        return self.lookahead_us + int(sorted(recent)[len(recent) // 2]) // 1000


Compute = Callable[[list[Job]], None]   # computes jobs for real: sets result, down_bytes, measured_ns


class CloudClock:
    def __init__(self, spec: CloudSpec, cost: BatchCost, compute: Compute | None = None):
        self.spec, self.cost, self.compute = spec, cost, compute
        self.unsized: list[Job] = []          # jobs of batches started whose real computation is deferred
        self.front, self.back = simpy.Environment(), simpy.Environment()
        self.ingress = SharedLink(self.front, spec.ingress_mbps * 1e6) if spec.ingress_mbps else None
        self.egress = SharedLink(self.back, spec.egress_mbps * 1e6) if spec.egress_mbps else None
        self.queue: list[Job] = []
        self.idle = spec.workers
        self.dispatching = False
        self.departed: list[Job] = []

    @property
    def lookahead_us(self) -> int:
        return self.cost.lookahead_us

    def add(self, jobs: list[Job]) -> None:
        """Requests arriving at or after the front's clock (every arrival before it is known already)."""
        jobs = sorted(jobs, key=lambda j: j.key)
        for job in jobs:
            if job.arrived_us < self.front.now:
                raise ValueError(f"{job.device_id} seq {job.seq} arrives at {job.arrived_us} µs, before the "
                                 f"cloud's clock ({self.front.now} µs)")
        # one event per arrival instant, its jobs in order: what one event each would do, since nothing else
        # could be scheduled between events scheduled back to back (SimPy runs an instant's events in order)
        for t, group in itertools.groupby(jobs, key=lambda j: j.arrived_us):
            at(self.front, t, lambda _, g=list(group): [self._arrive(j) for j in g])

    def advance(self, horizon_us: float) -> list[Job]:
        """Every arrival before ``horizon_us`` has been added: run, and return the jobs that departed
        before horizon_us + lookahead_us (in order), each once."""
        run_until(self.front, horizon_us)
        if self.unsized:
            jobs, self.unsized = self.unsized, []
            self.compute(jobs)
        run_until(self.back, horizon_us + self.lookahead_us)
        out, self.departed = self.departed, []
        return sorted(out, key=lambda j: (j.departed_us, j.device_id, j.seq))

    # ---- front: ingress, queue, workers (callbacks on timeouts: a process costs SimPy two more events) ----

    @staticmethod
    def _through(link: SharedLink | None, nbytes: int, then: Callable[[], None]) -> None:
        """Across one of the cloud's shared links (if it has it), then ``then()``."""
        if link is None:
            then()
        else:
            link.transmit(nbytes * 8, link.per_us * 1e6).callbacks.append(lambda _: then())

    def _arrive(self, job: Job) -> None:
        self._through(self.ingress, job.up_bytes, lambda: self._enqueue(job))

    def _enqueue(self, job: Job) -> None:
        job.enqueued_us = int(self.front.now)
        self.queue.append(job)
        self._dispatch_soon()

    def _dispatch_soon(self) -> None:
        """Dispatch once everything else due at this instant has happened, so requests that reach the
        queue at the same time share a batch."""
        if not self.dispatching:
            self.dispatching = True
            at(self.front, self.front.now, self._dispatch)

    def _dispatch(self, _event: simpy.Event) -> None:
        self.dispatching = False
        while self.idle and self.queue:
            batch, self.queue = self.queue[: self.spec.max_batch], self.queue[self.spec.max_batch:]
            self.idle -= 1
            self._start(batch)

    def _start(self, batch: list[Job]) -> None:
        start = int(self.front.now)
        if self.compute is not None:
            if self.spec.compute == "measured":
                self.compute(batch)           # its wall time is its charge
            else:
                self.unsized += batch
        took = self.cost(batch)
        for job in batch:
            job.start_us, job.end_us = start, start + took      # job.end_us >= back's clock: see the docstring
        at(self.back, start + took, lambda _: [self._depart(j) for j in batch])   # one event: as in ``add``
        at(self.front, start + took, self._free)

    def _free(self, _event: simpy.Event) -> None:
        self.idle += 1
        self._dispatch_soon()

    # ---- back: egress -----------------------------------------------------------------------

    def _depart(self, job: Job) -> None:
        self._through(self.egress, job.down_bytes, lambda: self._departed(job))

    def _departed(self, job: Job) -> None:
        job.departed_us = int(self.back.now)
        self.departed.append(job)

