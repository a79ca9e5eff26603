"""Work spread over forked processes, where the platform forks: a forked child shares this process's memory
(dataset, bundle, plans) without copying or loading it again, and computes with one torch thread, as runs do.

``map_devices`` plans a shard's devices on every core: each device's plan is its own (its streams are seeded
by its index, its Θb outputs computed alone, ``sim.device.plan_device``), so devices can be planned in any
process and order and the plans are the same bits. The work is split into chunks of consecutive devices;
``workers - 1`` forked processes plan some chunks while this process plans the others. Chunks are small, so
what a child sends back at once stays small however many devices there are.
"""
from __future__ import annotations

import multiprocessing
import os
from typing import Callable, Sequence, TypeVar

import torch

T = TypeVar("T")

CHUNK = 500               # devices per chunk handed to a process
MAX_WORKERS = 8

_job: Callable[[int], object] | None = None   # what a forked child runs: set before the fork, inherited


def default_workers() -> int:
    """The cores this process may run on (at most ``MAX_WORKERS``); ``PERSONA_SIM_PLAN_WORKERS`` overrides."""
    env = os.environ.get("PERSONA_SIM_PLAN_WORKERS")
    if env:
        return max(1, int(env))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_WORKERS, cores))


def can_fork() -> bool:
    """Whether a child can be forked safely: the platform forks, and torch computes with one thread here, so the
    child never waits on a thread pool its parent started."""
    return "fork" in multiprocessing.get_all_start_methods() and torch.get_num_threads() == 1


def _chunk(indices: list[int]) -> list:
    return [_job(i) for i in indices]


def map_devices(job: Callable[[int], T], indices: Sequence[int], workers: int | None = None,
                chunk: int | None = None) -> list[T]:
    """``[job(i) for i in indices]``, spread over ``workers`` processes (this one included), ``chunk`` (default
    ``CHUNK``) devices at a time."""
    global _job
    workers, chunk = default_workers() if workers is None else workers, chunk or CHUNK
    chunks = [list(indices[k:k + chunk]) for k in range(0, len(indices), chunk)]
    if workers <= 1 or len(chunks) < 2 or not can_fork():
        return [job(i) for i in indices]
    mine = set(range(0, len(chunks), workers))          # every workers-th chunk is planned here
    _job = job
    try:
        with multiprocessing.get_context("fork").Pool(min(workers - 1, len(chunks) - len(mine))) as pool:
            theirs = {c: pool.apply_async(_chunk, (chunks[c],))
                      for c in range(len(chunks)) if c not in mine}
            done = {c: [job(i) for i in chunks[c]] for c in sorted(mine)}
            done.update({c: r.get() for c, r in theirs.items()})
    finally:
        _job = None
    return [plan for c in range(len(chunks)) for plan in done[c]]

