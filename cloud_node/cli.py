"""`persona-sim cloud`: run the cloud node for a scenario."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import torch

from persona_sim.data.dataset import load_dataset
from persona_sim.errors import BundleError
from persona_sim.progress import stage_progress
from persona_sim.runtime import tune_for_serving
from persona_sim.scenario.files import command_overrides, load_scenario
from persona_sim.sim.cloud_engine import CloudEngine
from persona_sim.train.bundle import ensure_bundle, load_bundle_bytes

from .security import Security, check
from .server import serve


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cloud", help="run the cloud node (gRPC server) for a scenario",
                       description="Serve Persona edits for a scenario's devices over gRPC. Trains the model bundle "
                                   "first unless it is cached or given with --bundle.")
    p.add_argument("--scenario", required=True, help="scenario YAML file")
    p.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to listen on; port 0 picks a free port")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario key, e.g. cloud.workers=2")
    p.add_argument("--bundle", type=Path, help="serve this model bundle file instead of the cached one")
    p.add_argument("--port-file", type=Path, help="write the bound port to this file once serving")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    t = p.add_argument_group("security", "TLS, mutual TLS and a bearer token; `persona-sim certs DIR` makes test ones")
    t.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate chain (PEM)")
    t.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    t.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA (mutual TLS)")
    t.add_argument("--token-file", type=Path, help="require `authorization: Bearer <token>` on every RPC but health")
    t.add_argument("--insecure", action="store_true",
                   help="allow plaintext on a non-loopback --listen address (refused without this)")
    p.set_defaults(handler=run_cloud, default_log_level="info")


def run_cloud(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    scenario = load_scenario(args.scenario, command_overrides(args.set, args.seed))
    security = Security(args.tls_cert, args.tls_key, args.tls_client_ca, args.token_file, args.insecure)
    check(args.listen, security)
    path, dataset = args.bundle, None
    if path is None:
        dataset = load_dataset(scenario.dataset, scenario.seed)
        path, _ = ensure_bundle(scenario, dataset, stage_progress(args.quiet))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read model bundle ({exc.strerror})") from None
    bundle = load_bundle_bytes(data, str(path))
    engine = CloudEngine(scenario, bundle, len(data))
    # served to a device machine that lacks it; loaded only then (a local run's devices have their own)
    loader = (lambda: dataset) if dataset is not None else (lambda: load_dataset(scenario.dataset, scenario.seed))
    tune_for_serving()                        # after loading: what start-up built is frozen
    asyncio.run(serve(engine, data, args.listen, args.port_file, security=security, dataset=loader))
    return 0
