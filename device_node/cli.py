"""`persona-sim devices`: host a shard of a scenario's devices against a cloud node."""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
from pathlib import Path

import torch

from persona_sim.data.dataset import load_dataset
from persona_sim.errors import DatasetError, NodeError
from persona_sim.jobs.shard import run_shard
from persona_sim.progress import stage_progress
from persona_sim.report.markdown import render_table
from persona_sim.report.rundir import check_fresh, describe, prepare, shard_file
from persona_sim.scenario.files import command_overrides, load_scenario
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


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like I/N (e.g. 0/3), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="run a device node: simulate a scenario's devices against a cloud node",
                       description="Simulate (a shard of) the scenario's devices; adaptation requests go to the "
                                   "cloud node over gRPC. Writes the shard's results to --out, and the summary and "
                                   "report once every shard's results are there.")
    p.add_argument("--scenario", required=True, help="scenario YAML file")
    p.add_argument("--cloud", required=True, help="HOST:PORT of the cloud node")
    p.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                   help="host devices whose index mod N equals I (default 0/1: all)")
    p.add_argument("--out", type=Path, required=True, help="run directory to write results into")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario key, e.g. cloud.workers=2")
    p.add_argument("--bundle", type=Path, help="use this local model bundle instead of fetching the cloud's")
    p.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT_S, metavar="S",
                   help=f"give up if the cloud is not reachable within S seconds (default {CONNECT_TIMEOUT_S})")
    p.add_argument("--reconnect", type=float, default=RECONNECT_S, metavar="S",
                   help=f"when the cloud goes away mid-run, try to reconnect for S seconds (capped exponential "
                        f"backoff with jitter), then simulate the method in progress again from its start; "
                        f"0 fails at once (default {RECONNECT_S})")
    p.add_argument("--force", action="store_true", help="replace results already in --out")
    p.add_argument("--resume", action="store_true",
                   help="keep the methods this shard's file in --out already holds and simulate the rest")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-finalize", action="store_true", help=argparse.SUPPRESS)
    t = p.add_argument_group("security", "TLS to the cloud, a client certificate for mutual TLS, a bearer token")
    t.add_argument("--tls-ca", type=Path, help="connect with TLS, trusting the cloud's certificate if this CA signed it")
    t.add_argument("--tls-cert", type=Path, help="this node's certificate (PEM), for a cloud requiring mutual TLS")
    t.add_argument("--tls-key", type=Path, help="this node's private key (PEM)")
    t.add_argument("--tls-server-name", help="the name the cloud's certificate carries, if not the --cloud host")
    t.add_argument("--token-file", type=Path, help="send `authorization: Bearer <token>` from this file on every call")
    p.set_defaults(handler=run_devices)


def run_devices(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    scenario = load_scenario(args.scenario, command_overrides(args.set, args.seed))
    index, count = args.shard
    if not args.resume:
        check_fresh(args.out, args.force, "results.sqlite", "summary.json", shard_file(args.out, index, count).name)
    summary = asyncio.run(_run(args, scenario))
    if summary is not None:
        print(render_table(summary))
        print(f"\nrun directory: {args.out}")
    else:
        print(f"shard {index}/{count} done: its results are in {shard_file(args.out, index, count)}. The run's "
              f"summary and report are written when every shard's file is in one directory: by the last shard to "
              f"finish when they share --out, else with `persona-sim merge OUT DIR ...` over the shards' --out "
              f"directories.")
    return 0


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


async def _run(args: argparse.Namespace, scenario):
    index, count = args.shard
    target = args.cloud
    probe(target)
    sec = ClientSecurity(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name, args.token_file)
    options = channel_options(int(scenario.cloud.max_frame_mb * 2**20)) + RECONNECT_OPTIONS
    async with open_channel(target, options, sec) as ch:
        try:
            await asyncio.wait_for(ch.channel_ready(), args.connect_timeout)
        except asyncio.TimeoutError:
            hint = (" (it accepts TCP connections, so check TLS: --tls-ca, the certificate's name "
                    "(--tls-server-name), and a client certificate if the cloud requires one)") if sec.ca else ""
            raise NodeError(f"cannot reach the cloud node at {target} within {args.connect_timeout:g} s{hint}") from None
        stub = pb_grpc.PersonaCloudStub(ch)
        stub_info = await get_info(stub, target)
        check_same_scenario(stub_info, scenario, target)
        data = args.bundle.read_bytes() if args.bundle else await fetch_model(stub, stub_info, target)
        bundle = load_bundle_bytes(data, str(args.bundle or f"model from {target}"))
        hello = Hello(f"{socket.gethostname()}-{os.getpid()}", bundle.signature, index, count,
                      scenario_hash=scenario.run_hash())
        try:
            dataset = load_dataset(scenario.dataset, scenario.seed)
        except DatasetError as missing:            # a machine without the data: the cloud has it
            dataset = await fetch_dataset(stub, stub_info, target, missing)
        transport = GrpcTransport(ch, target, hello, stub_info.max_frame_bytes, reconnect_s=args.reconnect)
        await transport.open()
        if not (args.out / "manifest.json").exists():
            prepare(args.out, scenario, describe(scenario, dataset, bundle.signature, transport="grpc", shards=count))
        progress = stage_progress(args.quiet, position=index, prefix=f"shard {index}/{count} " if count > 1 else "")
        try:
            return await run_shard(scenario, bundle, dataset, transport, args.out, index, count,
                                   facts={"transport": "grpc"}, progress=progress,
                                   finalize_when_complete=not args.no_finalize, resume=args.resume)
        finally:
            await transport.close()
