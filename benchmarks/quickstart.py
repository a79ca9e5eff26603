"""Time `persona-sim run` on a scenario: cold cache once, then warm runs of both transports, interleaved.

    python benchmarks/quickstart.py [--scenario scenarios/quickstart.yaml] [--repeats 3] [--out benchmarks/results]

Writes <out>/quickstart-<host>.json with every run's wall time, the medians, the
gRPC/inproc ratio (measured side by side in one invocation), and the run's
figures (accuracy, RTT, cloud compute per adaptation), and checks that every run
has the same results digest.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_result  # benchmarks/ is on sys.path when a script here runs


def timed_run(scenario: str, out: Path, transport: str, cache: str) -> tuple[float, dict]:
    env = dict(os.environ, PERSONA_SIM_CACHE=cache)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "persona_sim.cli", "run", scenario, "--out", str(out), "--quiet",
                    "--transport", transport], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, json.loads((out / "summary.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="scenarios/quickstart.yaml")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        cold, first = timed_run(args.scenario, Path(tmp) / "cold", "grpc", cache)
        print(f"cold (trains the bundle), grpc: {cold:.1f} s", flush=True)
        walls: dict[str, list[float]] = {"grpc": [], "inproc": []}
        digests = {first["results_digest"]}
        for i in range(args.repeats):
            for transport in walls:
                wall, s = timed_run(args.scenario, Path(tmp) / f"{transport}{i}", transport, cache)
                walls[transport].append(round(wall, 2))
                digests.add(s["results_digest"])
                print(f"warm {transport} #{i + 1}: {wall:.1f} s", flush=True)
    med = {t: statistics.median(v) for t, v in walls.items()}
    result = {
        "scenario": args.scenario, "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "cold_grpc_s": round(cold, 2), "warm_s": walls, "warm_median_s": med,
        "grpc_over_inproc": round(med["grpc"] / med["inproc"], 3),
        "identical_digests": len(digests) == 1, "results_digest": first["results_digest"],
        "figures": {m: {k: v[k] for k in ("ndcg@10", "hr@10", "auc", "adaptations", "rtt_ms_p50", "rtt_ms_p95",
                                          "rtt_ms_p99", "bytes_up", "bytes_down")}
                    for m, v in first["methods"].items()},
        "cloud_compute_ms_p50_wall": first["wall_clock"]["cloud_compute_ms_p50"],
    }
    path = write_result(args.out, "quickstart", result)
    print(json.dumps({k: result[k] for k in ("cold_grpc_s", "warm_median_s", "grpc_over_inproc",
                                             "identical_digests")}, indent=2))
    print(f"wrote {path}")
    return 0 if result["identical_digests"] else 1


if __name__ == "__main__":
    sys.exit(main())
