"""A device node's whole job against one cloud: connect, agree on the scenario, get the model (and the data
if this machine lacks it), then simulate its shard. The CLI (`persona-sim devices`) and the cluster
launcher both call ``run_node``."""
from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from persona_sim.data.dataset import load_dataset
from persona_sim.errors import DatasetError, NodeError
from persona_sim.jobs.shard import plan_shard, run_shard
from persona_sim.progress import stage_progress
from persona_sim.report.rundir import describe, prepare
from persona_sim.runtime import tune_for_serving
from persona_sim.scenario.schema import Scenario
from persona_sim.train.bundle import load_bundle_bytes
from persona_sim.wire import pb_grpc
from persona_sim.wire.codec import channel_options
from persona_sim.wire.messages import Hello

from .client import GrpcTransport, check_same_scenario, fetch_dataset, fetch_model, get_info
from .connect import ClientSecurity, open_channel

CONNECT_TIMEOUT_S = 30
RECONNECT_S = 60
# gRPC's own reconnect backoff (1 s growing to 120 s by default) would leave a restarted cloud unseen for
# minutes; the node backs off itself (client.Backoff), so the channel only has to try when asked.
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                     ("grpc.max_reconnect_backoff_ms", 1000)]
PROBE_TIMEOUT_S = 1.5   # a plain TCP connect that tells "refused" from "slow" before gRPC retries hide it


@dataclass
class NodeOptions:
    shard: tuple[int, int] = (0, 1)
    bundle: Path | None = None            # a local model bundle instead of the cloud's
    security: ClientSecurity = field(default_factory=ClientSecurity)
    connect_timeout: float = CONNECT_TIMEOUT_S
    reconnect_s: float = RECONNECT_S
    quiet: bool = True
    resume: bool = False
    finalize: bool = True                 # the shard that completes the run writes its summary and report
    port_file: Path | None = None         # the cloud's port is written here once it listens (a local run)
    plan_workers: int | None = None       # processes planning the devices (None: every core, persona_sim.forks)


def probe(target: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fail at once, saying what happened, when nothing listens at HOST:PORT or the host has no address; a slow
    or silent host is left to the gRPC connect wait (--connect-timeout)."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([A-Za-z0-9._-]+):(\d+)", target)
    if match is None:
        return                                   # a gRPC target of another form (dns:///…, unix:…): gRPC decides
    host, port = match.group(1) or match.group(3), int(match.group(2) or match.group(4))
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except ConnectionRefusedError:
        raise NodeError(f"connection refused by {target}: no cloud node listens there "
                        "(start `persona-sim cloud` first, or check the port)") from None
    except socket.gaierror as exc:
        raise NodeError(f"cannot resolve the cloud's host {host!r} in {target}: {exc.strerror}") from None
    except OSError:
        return                                   # timed out or filtered: let the gRPC wait decide


async def cloud_port(target: str, port_file: Path, timeout_s: float) -> str:
    """``target`` with the port a local cloud node writes to ``port_file`` once it listens (the runner starts
    the cloud and its device nodes together)."""
    deadline = time.monotonic() + timeout_s
    while not (port_file.exists() and port_file.read_text().strip()):
        if time.monotonic() > deadline:
            raise NodeError(f"the cloud node wrote no port to {port_file} within {timeout_s:g} s")
        await asyncio.sleep(0.02)
    return f"{target.rpartition(':')[0]}:{port_file.read_text().strip()}"


async def run_node(scenario: Scenario, target: str, out: Path, opts: NodeOptions = NodeOptions()) -> dict | None:
    """Simulate shard ``opts.shard`` of ``scenario`` against the cloud at ``target``, into ``out``; the
    summary if this shard completed the run."""
    index, count = opts.shard
    bundle = dataset = plans = None
    if opts.bundle is not None:               # planned before any channel opens: planning forks (persona_sim.forks)
        bundle = load_bundle_bytes(opts.bundle.read_bytes(), str(opts.bundle))
        try:
            dataset = load_dataset(scenario.dataset, scenario.seed)
            plans = plan_shard(scenario, bundle, dataset, index, count, opts.plan_workers)
        except DatasetError:
            dataset = None                    # the cloud has it: fetched once connected
    if opts.port_file is not None:
        target = await cloud_port(target, opts.port_file, opts.connect_timeout)
    probe(target)
    sec = opts.security
    options = channel_options(int(scenario.cloud.max_frame_mb * 2**20)) + RECONNECT_OPTIONS
    async with open_channel(target, options, sec) as ch:
        try:
            await asyncio.wait_for(ch.channel_ready(), opts.connect_timeout)
        except asyncio.TimeoutError:
            hint = (" (it accepts TCP connections, so check TLS: --tls-ca, the certificate's name "
                    "(--tls-server-name), and a client certificate if the cloud requires one)") if sec.ca else ""
            raise NodeError(f"cannot reach the cloud node at {target} within {opts.connect_timeout:g} s{hint}") from None
        stub = pb_grpc.PersonaCloudStub(ch)
        info = await get_info(stub, target)
        check_same_scenario(info, scenario, target)
        if bundle is None:
            bundle = load_bundle_bytes(await fetch_model(stub, info, target), f"model from {target}")
        hello = Hello(f"{socket.gethostname()}-{os.getpid()}", bundle.signature, index, count,
                      scenario_hash=scenario.run_hash())
        if dataset is None:
            try:
                dataset = load_dataset(scenario.dataset, scenario.seed)
            except DatasetError as missing:            # a machine without the data: the cloud has it
                dataset = await fetch_dataset(stub, info, target, missing)
        if plans is None:                      # a channel is open now: planned in this process (no fork)
            plans = plan_shard(scenario, bundle, dataset, index, count, workers=1)
        transport = GrpcTransport(ch, target, hello, info.max_frame_bytes, reconnect_s=opts.reconnect_s)
        await transport.open()
        tune_for_serving()                    # after planning: the plans are frozen, not scanned by every collection
        if not (out / "manifest.json").exists():
            prepare(out, scenario, describe(scenario, dataset, bundle.signature, transport="grpc", shards=count))
        progress = stage_progress(opts.quiet, position=index, prefix=f"shard {index}/{count} " if count > 1 else "")
        try:
            return await run_shard(scenario, bundle, dataset, transport, out, index, count,
                                   facts={"transport": "grpc"}, progress=progress,
                                   finalize_when_complete=opts.finalize, resume=opts.resume, plans=plans)
        finally:
            await transport.close()
