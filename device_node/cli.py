"""`persona-sim devices`: host a shard of a scenario's devices against a cloud node."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import torch

from persona_sim.report.markdown import render_table
from persona_sim.report.rundir import check_fresh, shard_file
from persona_sim.scenario.files import command_overrides, load_scenario

from .connect import ClientSecurity
from .node import CONNECT_TIMEOUT_S, RECONNECT_S, NodeOptions, probe, run_node

__all__ = ["probe", "register", "run_devices"]


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
    p.add_argument("--cloud-port-file", type=Path, help=argparse.SUPPRESS)   # a local cloud's port, once it listens
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


async def _run(args: argparse.Namespace, scenario):
    sec = ClientSecurity(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name, args.token_file)
    return await run_node(scenario, args.cloud, args.out, NodeOptions(
        args.shard, args.bundle, sec, args.connect_timeout, args.reconnect, args.quiet, args.resume,
        finalize=not args.no_finalize, port_file=args.cloud_port_file))
