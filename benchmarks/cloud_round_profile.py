"""Where a cloud round of K requests goes: `bench cloud`'s rounds driven in process (the in-process transport,
so the same protobuf encoding and decoding), profiled with cProfile.

    python benchmarks/cloud_round_profile.py [SCENARIO] [--k 64] [--rounds 50] [--set KEY=VALUE ...]

Prints adaptations per second and the top functions by cumulative time, and the SimPy events the cloud's
clock handled per request. The quickstart (default) scaled to 256 devices where it has fewer, persona-s, as
`bench cloud` runs it.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from pathlib import Path

import simpy
import torch

from device_node.bench_cloud import QUIET_US, Load
from persona_sim.data.dataset import load_dataset
from persona_sim.jobs.bench_sim import scaled_settings
from persona_sim.jobs.transport import InprocTransport
from persona_sim.scenario.files import command_overrides, load_scenario
from persona_sim.sim.cloud_engine import CloudEngine
from persona_sim.sim.lockstep import Lockstep
from persona_sim.train.bundle import ensure_bundle, load_bundle
from persona_sim.wire.messages import Arrival, Hello, RoundReport


async def drive(scenario, bundle, bundle_path: Path, k: int, rounds: int) -> None:
    lockstep = Lockstep(CloudEngine(scenario, bundle, bundle_path.stat().st_size, cloud_id="profile"))
    transport = InprocTransport(lockstep, Hello("profile", bundle.signature, scenario_hash=scenario.run_hash()))
    load = Load(scenario, bundle.num_items, "persona-s", k)
    reply = await transport.round(RoundReport("persona-s", 0, 1, ()))
    front, until = 1, reply.until_us
    steps = [0]
    step = simpy.Environment.step

    def counted(env):
        steps[0] += 1
        return step(env)
    prof = cProfile.Profile()
    for i in range(rounds + 10):                          # 10 warm-up rounds, not profiled
        if i == 10:
            simpy.Environment.step, steps[0] = counted, 0
            prof.enable()
            t0 = time.perf_counter()
        arrivals = tuple(Arrival(r, front) for r in load.requests(front))
        reply = await transport.round(RoundReport("persona-s", until, until + QUIET_US, arrivals))
        front, until = until + QUIET_US, reply.until_us
    prof.disable()
    simpy.Environment.step = step
    seconds = time.perf_counter() - t0
    print(f"K={k}: {rounds * k / seconds:,.0f} adaptations/s in process (under the profiler), "
          f"{steps[0] / (rounds * k):.1f} SimPy events per request")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", type=Path, default=Path("scenarios/quickstart.yaml"))
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(1)
    overrides = command_overrides(args.set, None)
    scenario = load_scenario(args.scenario, overrides)
    if scenario.devices.count < max(256, args.k):
        overrides = scaled_settings(args.scenario, max(256, args.k), overrides)
        scenario = load_scenario(args.scenario, overrides)
    bundle_path, _ = ensure_bundle(scenario, load_dataset(scenario.dataset, scenario.seed), lambda *a: None)
    asyncio.run(drive(scenario, load_bundle(bundle_path), bundle_path, args.k, args.rounds))


if __name__ == "__main__":
    main()
