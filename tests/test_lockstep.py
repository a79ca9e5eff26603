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


def test_rounds_outrunning_the_values_thread_wait_for_it_and_no_reply_brings_more_than_one_batch(
        tiny_world, monkeypatch):
    scenario, _, _, path, bundle = tiny_world
    monkeypatch.setattr(lockstep, "FLUSH_ROWS", 4)
    monkeypatch.setattr(lockstep, "BACKLOG_ROWS", 8)
    lock = lockstep.Lockstep(CloudEngine(scenario, bundle, path.stat().st_size), values_thread=True)
    batches, compute_values = [], lock._compute_values

    def slow(method, pending):                      # a thread far slower than the rounds
        batches.append(len(pending))
        time.sleep(0.05)
        return compute_values(method, pending)
    lock._compute_values = slow
    hello = Hello("n", bundle.signature, scenario_hash=scenario.run_hash())
    lock.join(hello)
    k, rounds = 3, 30

    async def run():
        reply = await lock.submit(hello, RoundReport("persona-s", 0, 1, ()))
        front, until, sent, valued, lag = 1, reply.until_us, [], [], []
        for r in range(rounds + 1):
            arrivals = tuple(Arrival(AdaptRequest(f"dev-{(r * k + j) % 12:06d}", r * k + j, front, "persona-s",
                                                  (1, 2, 3)), front) for j in range(k)) if r < rounds else ()
            reply = await lock.submit(hello, RoundReport("persona-s", until, until + QUIET_US if r < rounds else None,
                                                         arrivals))
            sent += [(e.device_id, e.seq) for e in reply.results if isinstance(e, EditResult)]
            for block in map(pb.EditValues.FromString, reply.value_blocks):   # as the cloud sends them
                valued += list(zip(block.device_ids, block.seqs))
            lag.append(len(sent) - len(valued))
            front, until = until + QUIET_US, reply.until_us
        return sent, valued, lag
    sent, valued, lag = asyncio.run(run())

    assert len(sent) == k * rounds and sorted(valued) == sorted(sent)     # every value, once, by the run's end
    assert max(batches[:-1]) <= 4                 # the thread takes a batch at a time (the end computes the rest)
    assert max(lag[:-1]) <= 8 + 4 + k             # the backlog, the batch being computed, one round's requests
    assert lag[-1] == 0


def test_a_round_waiting_for_the_values_thread_keeps_the_loop_serving_and_ends_aborted_if_its_shard_leaves(
        tiny_world, monkeypatch):
    scenario, _, _, path, bundle = tiny_world
    monkeypatch.setattr(lockstep, "FLUSH_ROWS", 4)
    monkeypatch.setattr(lockstep, "BACKLOG_ROWS", 8)
    lock = lockstep.Lockstep(CloudEngine(scenario, bundle, path.stat().st_size), values_thread=True)
    gate, compute_values = threading.Event(), lock._compute_values
    lock._compute_values = lambda method, pending: gate.wait(30) and compute_values(method, pending)
    hello = Hello("n", bundle.signature, scenario_hash=scenario.run_hash())
    lock.join(hello)

    async def run():
        reply = await lock.submit(hello, RoundReport("persona-s", 0, 1, ()))
        front, until, r = 1, reply.until_us, 0
        while True:
            report = RoundReport("persona-s", until, until + QUIET_US, tuple(
                Arrival(AdaptRequest(f"dev-{(3 * r + j) % 12:06d}", 3 * r + j, front, "persona-s", (1, 2)), front)
                for j in range(3)))
            if lock._behind(lock.sessions["persona-s"]):
                break
            reply = await lock.submit(hello, report)
            front, until, r = until + QUIET_US, reply.until_us, r + 1
        waiting = asyncio.ensure_future(lock.submit(hello, report))
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
