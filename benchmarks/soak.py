"""Soak: one long-lived cloud node, device-node runs against it back to back. Does it leak or slow down?

    python benchmarks/soak.py [--minutes 30] [--scenario scenarios/quickstart.yaml] [--out benchmarks/results]

Starts `persona-sim cloud` for the scenario (its bundle is trained first if not cached) on a free loopback
port, then runs `persona-sim devices` against it again and again, each into a fresh directory, until
``--minutes`` have passed. Meanwhile a thread asks the standard health check every 0.2 s. Records the
cloud process's resident memory and open file descriptors (from /proc) after the first run (warm) and after
each one, every run's wall time and results digest (all must be equal: the cloud keeps no state from one
run into the next), and the health-check latencies. Writes <out>/soak-<host>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from results_file import write_result  # benchmarks/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parent.parent


def proc_stats(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
    return {"rss_mb": round(rss_kb / 1024, 1), "open_fds": len(os.listdir(f"/proc/{pid}/fd"))}


class HealthProbe(threading.Thread):
    """The health check every ``every_s``; latencies in ms, failures counted."""

    def __init__(self, target: str, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.target, self.every_s = target, every_s
        self.latencies: list[float] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not self.stop.wait(self.every_s):
                t0 = time.perf_counter()
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                    ok = reply.status == health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError:
                    ok = False
                if ok:
                    self.latencies.append((time.perf_counter() - t0) * 1e3)
                else:
                    self.failures += 1


def start_cloud(scenario: Path, workdir: Path) -> tuple[subprocess.Popen, str]:
    port_file, log = workdir / "cloud.port", workdir / "cloud.log"
    with log.open("w") as sink:
        cloud = subprocess.Popen([sys.executable, "-m", "persona_sim.cli", "cloud", "--scenario", str(scenario),
                                  "--listen", "127.0.0.1:0", "--port-file", str(port_file), "--quiet",
                                  "--log-level", "warning"], stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    while not port_file.exists():           # the first start may train the bundle: no deadline
        if cloud.poll() is not None:
            raise SystemExit(f"the cloud exited with {cloud.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    return cloud, f"127.0.0.1:{port_file.read_text().strip()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "quickstart.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    cloud, target = start_cloud(args.scenario.resolve(), workdir)
    probe = HealthProbe(target)
    runs, t_end = [], None
    try:
        before = proc_stats(cloud.pid)
        probe.start()
        t0 = time.monotonic()
        while not runs or time.monotonic() - t0 < args.minutes * 60:
            out = workdir / f"run-{len(runs)}"
            r0 = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "persona_sim.cli", "devices", "--scenario",
                                   str(args.scenario.resolve()), "--cloud", target, "--out", str(out), "--quiet"],
                                  capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"run {len(runs)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            digest = json.loads((out / "summary.json").read_text())["results_digest"]
            runs.append({"wall_s": round(time.monotonic() - r0, 2), "digest": digest, **proc_stats(cloud.pid)})
            print(f"run {len(runs)}: {runs[-1]}, {(time.monotonic() - t0) / 60:.1f} min", flush=True)
        t_end = time.monotonic() - t0
    finally:
        probe.stop.set()
        cloud.terminate()
        cloud.wait(timeout=60)
    lat = np.array(probe.latencies)
    warm, last = runs[0], runs[-1]
    result = {
        "scenario": str(args.scenario), "minutes": round(t_end / 60, 2), "runs": len(runs),
        "cloud_at_start": before,
        "cloud_after_first_run": {k: warm[k] for k in ("rss_mb", "open_fds")},
        "cloud_after_last_run": {k: last[k] for k in ("rss_mb", "open_fds")},
        "rss_growth_after_warmup_mb": round(last["rss_mb"] - warm["rss_mb"], 1),
        "run_wall_s": {"median": float(np.median([r["wall_s"] for r in runs])),
                       "first": warm["wall_s"], "last": last["wall_s"]},
        "one_digest": len({r["digest"] for r in runs}) == 1,
        "health": {"checks": int(lat.size), "failures": probe.failures,
                   "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
                   "max_ms": round(float(lat.max()), 2)},
        "cloud_exit_code": cloud.returncode,
        "per_run": runs,
    }
    path = write_result(args.out, "soak", result)
    print(json.dumps({k: v for k, v in result.items() if k != "per_run"}, indent=2))
    print(f"wrote {path}")
    return 0 if result["one_digest"] and probe.failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
