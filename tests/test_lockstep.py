"""The lockstep's edit values on a thread of their own, as the cloud node computes them."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from persona_sim.errors import ProtocolError
from persona_sim.sim import lockstep
from persona_sim.sim.cloud_engine import CloudEngine
from persona_sim.wire.messages import AdaptRequest, Arrival, EditResult, Hello, RoundReport
from persona_sim.wire.proto import persona_pb2 as pb

QUIET_US = 10_000_000    # each report promises no arrival for this long: every round answers all its requests
K = 3                    # requests a round


def _threaded(tiny_world, monkeypatch, compute_values) -> tuple[lockstep.Lockstep, Hello]:
    """A cloud's lockstep with a values thread taking 4 edits at a time and rounds waiting once 8 more wait;
    ``compute_values(original, method, pending)`` stands in for the thread's work. One shard has joined."""
    scenario, _, _, path, bundle = tiny_world
    monkeypatch.setattr(lockstep, "FLUSH_ROWS", 4)
    monkeypatch.setattr(lockstep, "BACKLOG_ROWS", 8)
    lock = lockstep.Lockstep(CloudEngine(scenario, bundle, path.stat().st_size), values_thread=True)
    original = lock._compute_values
    lock._compute_values = lambda method, pending: compute_values(original, method, pending)
    hello = Hello("n", bundle.signature, scenario_hash=scenario.run_hash())
    lock.join(hello)
    return lock, hello


def _report(r: int, front: int, until: int, last: bool = False) -> RoundReport:
    """Round r's report: K devices' requests arriving at ``front`` (none in the last)."""
    arrivals = () if last else tuple(Arrival(AdaptRequest(f"dev-{(r * K + j) % 12:06d}", r * K + j, front,
                                                          "persona-s", (1, 2, 3)), front) for j in range(K))
    return RoundReport("persona-s", until, None if last else until + QUIET_US, arrivals)


def test_rounds_outrunning_the_values_thread_wait_for_it_and_no_reply_brings_more_than_one_batch(
        tiny_world, monkeypatch):
    batches = []

    def slow(original, method, pending):            # a thread far slower than the rounds
        batches.append(len(pending))
        time.sleep(0.05)
        return original(method, pending)
    lock, hello = _threaded(tiny_world, monkeypatch, slow)
    rounds = 30

    async def run():
        reply = await lock.submit(hello, RoundReport("persona-s", 0, 1, ()))
        front, until, sent, valued, lag = 1, reply.until_us, [], [], []
        for r in range(rounds + 1):
            reply = await lock.submit(hello, _report(r, front, until, last=r == rounds))
            sent += [(e.device_id, e.seq) for e in reply.results if isinstance(e, EditResult)]
            for block in map(pb.EditValues.FromString, reply.value_blocks):   # as the cloud sends them
                valued += list(zip(block.device_ids, block.seqs))
            lag.append(len(sent) - len(valued))
            front, until = until + QUIET_US, reply.until_us
        return sent, valued, lag
    sent, valued, lag = asyncio.run(run())

    assert len(sent) == K * rounds and sorted(valued) == sorted(sent)     # every value, once, by the run's end
    assert max(batches[:-1]) <= 4                 # the thread takes a batch at a time (the end computes the rest)
    assert max(lag[:-1]) <= 8 + 4 + K             # the backlog, the batch being computed, one round's requests
    assert lag[-1] == 0


def test_a_round_waiting_for_the_values_thread_keeps_the_loop_serving_and_ends_aborted_if_its_shard_leaves(
        tiny_world, monkeypatch):
    gate = threading.Event()                         # the thread's work waits for this
    lock, hello = _threaded(tiny_world, monkeypatch,
                            lambda original, method, pending: gate.wait(30) and original(method, pending))

    async def run():
        reply = await lock.submit(hello, RoundReport("persona-s", 0, 1, ()))
        front, until, r = 1, reply.until_us, 0
        while not lock._behind(lock.sessions["persona-s"]):
            reply = await lock.submit(hello, _report(r, front, until))
            front, until, r = until + QUIET_US, reply.until_us, r + 1
        waiting = asyncio.ensure_future(lock.submit(hello, _report(r, front, until)))
        for _ in range(5):
            await asyncio.sleep(0)                     # the loop runs on while the round waits
        assert not waiting.done()
        lock.leave(hello)                              # the stream ends mid-wait: the run is aborted
        with pytest.raises(ProtocolError) as exc:
            await waiting
        gate.set()
        return exc.value
    error = asyncio.run(run())
    assert error.code == "ABORTED" and "persona-s" not in lock.sessions
