"""What a device node does, whatever carries its messages: plan its shard's
devices, simulate every method, write the shard's results.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..data.dataset import Dataset
from ..data.split import split_users
from ..errors import BundleError
from ..forks import map_devices
from ..report.results import ResultsWriter
from ..report.rundir import finalize, shard_file
from ..scenario.schema import Scenario
from ..sim.device import DevicePlan, cluster_labels, plan_device
from ..sim.drift import DriftContext, targets
from ..sim.simulation import Recorder, Transport, simulate
from ..train.bundle import Bundle


def shard_devices(scenario: Scenario, index: int, shards: int) -> list[int]:
    return [i for i in range(scenario.devices.count) if scenario.shard_of(i, shards) == index]


def plan_shard(scenario: Scenario, bundle: Bundle, dataset: Dataset, index: int, shards: int,
               workers: int | None = None) -> list[DevicePlan]:
    """Every device of the shard planned (over ``workers`` processes, ``forks.map_devices``: the same plans)."""
    if dataset.fingerprint() != bundle.meta["dataset_fingerprint"]:
        raise BundleError(f"the model bundle was trained on dataset {bundle.meta['dataset_fingerprint']}, but this "
                          f"node loaded {dataset.name} with fingerprint {dataset.fingerprint()}")
    split = split_users(dataset, scenario)
    drift, chosen = None, [set() for _ in scenario.drift]
    if scenario.drift:                      # every shard builds the same context: the whole held-out pool
        pool = split.device_users
        needs_donor = any(d.kind in ("takeover", "mixing", "periodic") for d in scenario.drift)
        labels = cluster_labels(bundle, dataset, pool, scenario.persona.window) if needs_donor else None
        drift = DriftContext(dataset, pool, labels, scenario.seed)
        chosen = targets(scenario.drift, scenario.devices.count, scenario.seed)
        kinds = {d.kind for d in scenario.drift}
        if "category" in kinds and dataset.item_category is not None:
            drift.category_streams                  # computed once here, not in every planning process
        if "popularity" in kinds:
            drift.trending

    def plan(i: int) -> DevicePlan:
        return plan_device(i, int(split.device_users[i]), dataset, scenario, bundle, drift,
                           [(j, d) for j, d in enumerate(scenario.drift) if i in chosen[j]])
    return map_devices(plan, shard_devices(scenario, index, shards), workers)


async def run_shard(scenario: Scenario, bundle: Bundle, dataset: Dataset, transport: Transport | None, out: Path,
                    index: int = 0, shards: int = 1, facts: dict | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    finalize_when_complete: bool = True, resume: bool = False,
                    plans: list[DevicePlan] | None = None) -> dict | None:
    """Simulate this shard (``plans``: its devices, planned already), writing its results file after every
    method (so a failure loses only the method in progress); with ``resume``, keep the methods the file already
    holds and simulate the rest. Return the summary if this shard completed the run."""
    t0 = time.perf_counter()
    plans = plan_shard(scenario, bundle, dataset, index, shards) if plans is None else plans
    out.mkdir(parents=True, exist_ok=True)
    shifts = [(p.device_id, k, s.kind, s.event, s.t_us, s.detail) for p in plans for k, s in enumerate(p.shifts)]
    writer = ResultsWriter(shard_file(out, index, shards), {"shard": [index, shards],
                                                            "model_signature": bundle.signature}, shifts, keep=resume)
    try:
        done = [m for m in scenario.methods if m in writer.done]
        rec = Recorder(sink=lambda table, rows: writer.append(table, [(index, *r) for r in rows] if table == "rounds"
                                                              else rows))
        await simulate(scenario, bundle, plans, transport, progress, rec, frozenset(done), writer.method_done,
                       lambda _method: writer.discard_method())
    finally:
        writer.close()
    if not finalize_when_complete:
        return None
    facts = dict(facts or {}, wall_seconds=round(time.perf_counter() - t0, 2))
    return finalize(out, scenario, shards, facts)
