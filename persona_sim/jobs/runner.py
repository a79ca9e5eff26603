"""`persona-sim run`: the whole job on one machine.

Trains (or reuses) the model bundle, then either starts the cloud node and the
device node(s) as separate processes talking real gRPC on a free loopback port
(transport ``grpc``, the default), or runs the same cloud and device logic in
this process (``inproc``). Both give identical simulated results.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..data.dataset import load_dataset
from ..errors import NodeError
from ..methods import require_simulable
from ..progress import Callback
from ..report.rundir import describe, finalize, prepare
from ..scenario.schema import Scenario
from ..sim.cloud_engine import CloudEngine
from ..sim.lockstep import Lockstep
from ..train.bundle import ensure_bundle, load_bundle, reproducible_torch, signature_of
from ..wire.messages import Hello
from .shard import run_shard
from .transport import InprocTransport

CLOUD_START_TIMEOUT_S = 120


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        _reap(proc)


def _reap(proc: subprocess.Popen) -> None:
    """Wait for a process told to stop; one that takes over 15 s is killed."""
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _spawn(into: list[subprocess.Popen], args: list[str], **kwargs) -> subprocess.Popen:
    """Start a node process and record it in ``into`` with SIGINT/SIGTERM held off meanwhile: a signal between
    the fork and the record would leave a child that nobody stops. The child starts with the signals open."""
    held = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        proc = subprocess.Popen(args, preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, before), **kwargs)
        into.append(proc)
        return proc
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _wait_for_nodes(nodes: list[subprocess.Popen], cloud: subprocess.Popen, cloud_log: Path,
                    port_file: Path) -> list[int]:
    """The device nodes' exit codes; a cloud that exits while any of them still runs ends the run at once."""
    deadline = time.monotonic() + CLOUD_START_TIMEOUT_S
    while any(n.poll() is None for n in nodes):
        if cloud.poll() is not None:
            when = "while the device nodes ran" if port_file.exists() else "before serving"
            raise NodeError(f"the cloud node exited with code {cloud.returncode} {when}:\n{_tail(cloud_log)}")
        if deadline is not None and port_file.exists():
            deadline = None
        elif deadline is not None and time.monotonic() > deadline:
            raise NodeError(f"the cloud node did not start within {CLOUD_START_TIMEOUT_S} s; see {cloud_log}")
        time.sleep(0.05)
    return [n.returncode for n in nodes]


def _run_grpc(scenario_file: Path, bundle_path: Path, out: Path, shards: int, quiet: bool,
              resume: bool) -> subprocess.Popen:
    """The cloud and the device nodes start together: a node loads its data and plans its devices while the
    cloud starts, then connects to the port the cloud writes to ``.cloud-port`` once it listens. Once the
    nodes are done, the cloud is told to stop and returned, still stopping (~0.6 s): the caller sums the
    results up meanwhile and then waits for it (``_reap``). On any failure it is stopped here."""
    port_file, cloud_log = out / ".cloud-port", out / "cloud.log"
    port_file.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    common = ["--scenario", str(scenario_file), "--bundle", str(bundle_path)] + (["--quiet"] if quiet else [])
    started: list[subprocess.Popen] = []
    try:
        with cloud_log.open("w") as log:
            cloud = _spawn(started, [sys.executable, "-m", "cloud_node", *common, "--listen", "127.0.0.1:0",
                                     "--port-file", str(port_file)], stdout=log, stderr=subprocess.STDOUT, env=env)
        nodes = []
        try:
            for i in range(shards):
                _spawn(nodes, [sys.executable, "-m", "device_node", *common, "--cloud", "127.0.0.1:0",
                               "--cloud-port-file", str(port_file), "--connect-timeout", str(CLOUD_START_TIMEOUT_S),
                               "--shard", f"{i}/{shards}", "--out", str(out), "--no-finalize",
                               "--resume" if resume else "--force"], stdout=subprocess.DEVNULL, env=env)
            codes = _wait_for_nodes(nodes, cloud, cloud_log, port_file)
        finally:                      # interrupted (SIGINT, SIGTERM) or failed: no device node outlives the run
            for n in nodes:
                _stop(n)
        bad = [(i, c) for i, c in enumerate(codes) if c != 0]
        if bad:
            raise NodeError(f"device node shard(s) failed: {', '.join(f'{i}/{shards} exit {c}' for i, c in bad)}"
                            f"; cloud log: {cloud_log}")
    except BaseException:
        for proc in started:          # the cloud, once started
            _stop(proc)
        raise
    finally:
        port_file.unlink(missing_ok=True)
    cloud.send_signal(signal.SIGTERM)
    return cloud


async def _run_inproc(scenario: Scenario, bundle_path: Path, dataset, out: Path, shards: int,
                      progress: Callback, resume: bool) -> None:
    bundle = load_bundle(bundle_path)
    lockstep = Lockstep(CloudEngine(scenario, bundle, bundle_path.stat().st_size, cloud_id="inproc"))
    await asyncio.gather(*(
        run_shard(scenario, bundle, dataset, InprocTransport(lockstep, Hello("inproc", bundle.signature, i, shards,
                                                                     scenario_hash=scenario.run_hash())),
                  out, i, shards, progress=progress, finalize_when_complete=False, resume=resume)
        for i in range(shards)))


def _resumable(out: Path, scenario: Scenario, signature: str) -> int:
    """The shard count of the interrupted run in ``out``, after checking it can be resumed here."""
    manifest_path = out / "manifest.json"
    if not manifest_path.exists():
        raise NodeError(f"{out}: no manifest.json, so no run to resume there")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("complete"):
        raise NodeError(f"{out}: the run there is complete; nothing to resume")
    if manifest.get("bundle", {}).get("signature") != signature:
        raise NodeError(f"{out}: the run there used model {manifest.get('bundle', {}).get('signature')}, "
                        f"this one would use {signature}; cannot resume it with another model")
    return int(manifest.get("shards", 1))


def _run_cluster(cluster: str, scenario_file: Path, bundle_path: Path, out: Path, shards: int, quiet: bool) -> dict:
    """``ENGINE`` or ``ENGINE://ADDRESS``: the launcher a node shell registers for that engine places the nodes."""
    from importlib.metadata import entry_points

    engine, _, address = cluster.partition("://")
    launchers = {ep.name: ep for ep in entry_points(group="persona_sim.clusters")}
    if engine not in launchers:
        raise NodeError(f"--cluster {cluster!r}: no launcher for {engine!r} (known: {', '.join(sorted(launchers)) or 'none'})")
    return launchers[engine].load()(scenario_file, bundle_path, out, shards, address or None,
                                    progress=(lambda line: None) if quiet else print)


def run(scenario: Scenario, out: Path, transport: str, shards: int, quiet: bool,
        progress: Callback, resume: bool = False, cluster: str | None = None) -> dict:
    """Run the scenario into ``out``; return the summary. Each method's results are kept as it completes:
    if the run fails, ``out`` reports the completed methods (marked incomplete) and ``resume`` goes on from
    there, ending with the results an uninterrupted run gives."""
    t0 = time.perf_counter()
    require_simulable(scenario.methods, scenario.name)
    dataset = load_dataset(scenario.dataset, scenario.seed)
    bundle_path, trained = ensure_bundle(scenario, dataset, progress)
    signature = signature_of(bundle_path.read_bytes())
    if resume:
        shards = _resumable(out, scenario, signature)
    else:
        prepare(out, scenario, describe(scenario, dataset, signature, transport=transport, shards=shards,
                                        bundle_trained_now=trained))
    facts: dict = {"transport": transport}
    stopping = None                   # the gRPC run's cloud, stopping while the results are summed up
    try:
        if cluster is not None:
            facts.update(_run_cluster(cluster, out / "scenario.yaml", bundle_path, out, shards, quiet))
        elif transport == "grpc":
            stopping = _run_grpc(out / "scenario.yaml", bundle_path, out, shards, quiet, resume)
        else:
            with reproducible_torch():   # the same kernels and thread count as the node processes
                asyncio.run(_run_inproc(scenario, bundle_path, dataset, out, shards, progress, resume))
    except BaseException:             # failed or interrupted: report what finished, keep it for --resume
        try:
            finalize(out, scenario, shards, facts, partial=True)
        except Exception:             # the original failure is the one to report
            pass
        raise
    try:
        summary = finalize(out, scenario, shards, {**facts, "wall_seconds": round(time.perf_counter() - t0, 2)})
    finally:
        if stopping is not None:
            _reap(stopping)
    assert summary is not None, "every shard ran, so the run is complete"
    return summary
