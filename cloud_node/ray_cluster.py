"""`persona-sim run SCENARIO --cluster ray[://HOST:PORT]`: the run's nodes placed on a Ray cluster.

The cloud node becomes a Ray actor serving gRPC on its machine (all interfaces, with a bearer token made for
this run, since a cluster's network is shared); each device shard becomes a Ray task, spread over the
cluster's nodes, that runs exactly what `persona-sim devices` runs (``device_node.node.run_node``) against
the actor's address. The model bundle travels through Ray's object store; a shard whose machine lacks the
dataset fetches it from the cloud (``FetchDataset``), as any device node does. Each task returns its shard's
results file, which the launcher writes into the run directory; the run then finishes as a local one does,
so the results digest is the local run's.

``HOST:PORT`` is a running cluster's GCS address (``ray start --head`` prints it); plain ``ray`` joins the
cluster in ``$RAY_ADDRESS``, or starts a one-machine Ray for this run. Ray is an optional extra
(``pip install 'persona-sim[ray]'``).
"""
from __future__ import annotations

import asyncio
import secrets
import tempfile
import threading
from pathlib import Path

from persona_sim.errors import NodeError


def _ray():
    try:
        import ray
    except ImportError:
        raise NodeError("--cluster ray needs Ray: pip install 'persona-sim[ray]'") from None
    return ray


def _files(scenario_text: str, token: str, tmp: Path) -> tuple[Path, Path]:
    (tmp / "scenario.yaml").write_text(scenario_text)
    (tmp / "token").write_text(token)
    return tmp / "scenario.yaml", tmp / "token"


class CloudActor:
    """The cloud node in a Ray actor's process: a gRPC server on a thread of its own event loop."""

    def __init__(self, scenario_text: str, bundle_bytes: bytes, token: str):
        import torch

        from persona_sim.data.dataset import load_dataset
        from persona_sim.scenario.files import load_scenario
        from persona_sim.sim.cloud_engine import CloudEngine
        from persona_sim.train.bundle import load_bundle_bytes

        from .security import Security
        from .server import start_server

        torch.set_num_threads(1)
        self.tmp = tempfile.TemporaryDirectory(prefix="persona-ray-cloud-")   # removed with the actor
        scenario_file, token_file = _files(scenario_text, token, Path(self.tmp.name))
        scenario = load_scenario(scenario_file)
        engine = CloudEngine(scenario, load_bundle_bytes(bundle_bytes, "the run's bundle"), len(bundle_bytes))
        ready, self.loop = threading.Event(), asyncio.new_event_loop()

        def serve():
            asyncio.set_event_loop(self.loop)
            self.server, self.port, _ = self.loop.run_until_complete(start_server(
                engine, bundle_bytes, "0.0.0.0:0", Security(token_file=token_file, insecure=True),
                dataset=lambda: load_dataset(scenario.dataset, scenario.seed)))
            ready.set()
            self.loop.run_forever()
        threading.Thread(target=serve, daemon=True).start()
        if not ready.wait(120):
            raise NodeError("the cloud actor's gRPC server did not start within 120 s")

    def address(self) -> str:
        import ray
        return f"{ray.util.get_node_ip_address()}:{self.port}"


def shard_task(scenario_text: str, target: str, index: int, count: int, bundle_bytes: bytes,
               token: str) -> tuple[bytes, str]:
    """One device shard on whichever node Ray placed it: its results file's bytes, and that node's id."""
    import ray
    import torch

    from device_node.connect import ClientSecurity
    from device_node.node import NodeOptions, run_node
    from persona_sim.report.rundir import shard_file
    from persona_sim.scenario.files import load_scenario

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="persona-ray-shard-") as tmp:
        scenario_file, token_file = _files(scenario_text, token, Path(tmp))
        bundle = scenario_file.parent / "bundle.pt"
        bundle.write_bytes(bundle_bytes)
        out = scenario_file.parent / "out"
        # planned in this process: Ray gave the task one CPU, and forking beside Ray's threads is not safe
        asyncio.run(run_node(load_scenario(scenario_file), target, out, NodeOptions(
            (index, count), bundle, ClientSecurity(token_file=token_file), finalize=False, plan_workers=1)))
        return shard_file(out, index, count).read_bytes(), ray.get_runtime_context().get_node_id()[:12]


def run_on_ray(scenario_file: Path, bundle_path: Path, out: Path, shards: int, address: str | None,
               progress=print) -> dict:
    """Place the cloud and ``shards`` device shards on the cluster at ``address`` and gather the shards'
    results files into ``out``; returns facts for the manifest (the cluster's nodes, where each part ran)."""
    from persona_sim.report.rundir import shard_file

    ray = _ray()
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        progress(f"ray: {len(nodes)} node(s), {ray.cluster_resources().get('CPU', 0):g} CPUs; "
                 f"placing the cloud and {shards} device shard(s)")
        token, text = secrets.token_urlsafe(24), scenario_file.read_text()
        bundle_ref = ray.put(bundle_path.read_bytes())
        cloud = ray.remote(num_cpus=0)(CloudActor).remote(text, bundle_ref, token)
        try:
            target = ray.get(cloud.address.remote())
            task = ray.remote(num_cpus=0, max_retries=0)(shard_task)
            refs = [task.options(scheduling_strategy="SPREAD").remote(text, target, i, shards, bundle_ref, token)
                    for i in range(shards)]
            try:
                results = ray.get(refs)
            except ray.exceptions.RayTaskError as exc:
                raise NodeError(f"a device shard failed on the cluster: {exc.cause}") from None
        finally:
            ray.kill(cloud)
        for i, (data, _) in enumerate(results):
            shard_file(out, i, shards).write_bytes(data)
        return {"cluster": {"engine": "ray", "address": address or "local", "nodes": len(nodes),
                            "cloud": target, "shard_nodes": [node for _, node in results]}}
    finally:
        ray.shutdown()
