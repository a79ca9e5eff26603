"""One persona-s edit call on 8 windows (the quickstart's bundle) under torch.no_grad against torch.inference_mode.

    python benchmarks/inference_mode.py [--repeats 7] [--calls 200] [--out benchmarks/results]

The two modes alternate; each figure is the median over repeats of the mean of ``--calls`` calls, one torch
thread, as the cloud node runs. Writes <out>/inference-mode-<host>.json.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from results_file import write_result  # benchmarks/ is on sys.path when a script here runs

from persona_sim.data.dataset import load_dataset
from persona_sim.model.adaptation import edit_global
from persona_sim.scenario.files import load_scenario
from persona_sim.train.bundle import ensure_bundle, load_bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    scenario = load_scenario("scenarios/quickstart.yaml")
    bundle = load_bundle(ensure_bundle(scenario, load_dataset(scenario.dataset, scenario.seed), lambda *a: None)[0])
    windows = torch.randint(1, bundle.num_items, (8, scenario.persona.window), generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"no_grad": [], "inference_mode": []}
    for _ in range(args.repeats):
        for name, mode in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
            with mode():
                for _ in range(20):
                    edit_global(bundle.models, windows)
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    edit_global(bundle.models, windows)
                times[name].append((time.perf_counter() - t0) / args.calls * 1e6)
    result = {name: {"us_per_call_median": round(statistics.median(v), 1), "runs": [round(x, 1) for x in v]}
              for name, v in times.items()}
    for name, r in result.items():
        print(f"{name:15s} {r['us_per_call_median']:8.1f} µs per call (8 windows)")
    print("written:", write_result(args.out, "inference-mode", result))


if __name__ == "__main__":
    main()
