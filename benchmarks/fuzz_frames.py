"""Hostile frames against a live cloud node: does it survive, stay responsive, and still compute the same edits?

    python benchmarks/fuzz_frames.py [--frames 10000] [--scenario scenarios/quickstart.yaml] [--out benchmarks/results]

Serves the scenario's real cloud node (its cached model bundle; trained first if missing) on a free loopback
port and sends ``--frames`` frames to ``Adapt``, one stream each, in five classes: random bytes, valid frames
cut short, structurally valid frames with hostile values (random Hello fields, unknown devices, huge and
negative numbers, rounds out of order, requests before Hello, a second Hello), floods of 5,000 requests in
one frame, and frames over the size cap. After every 250 frames and after each class it times the health
check; at the end it runs one legitimate lockstep round against it and against a fresh server, and checks
the edits are identical. Writes <out>/fuzz-frames-<host>.json with the statuses per class, the health
latencies (p50/p99/max), the process RSS and open descriptors before and after, and the verdict.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import os
import resource
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from results_file import write_result  # benchmarks/ is on sys.path when a script here runs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cloud_node.server import SERVICE_NAME, start_server  # noqa: E402
from device_node.client import GrpcTransport  # noqa: E402
from persona_sim.data.dataset import load_dataset  # noqa: E402
from persona_sim.scenario.files import load_scenario  # noqa: E402
from persona_sim.sim.cloud_engine import CloudEngine  # noqa: E402
from persona_sim.train.bundle import ensure_bundle, load_bundle  # noqa: E402
from persona_sim.wire import pb  # noqa: E402
from persona_sim.wire.codec import channel_options  # noqa: E402
from persona_sim.wire.messages import PROTOCOL_VERSION, AdaptRequest, Arrival, Hello, RoundReport  # noqa: E402

ADAPT = f"/{SERVICE_NAME}/Adapt"


class Cloud:
    def __init__(self, engine: CloudEngine, data: bytes):
        self.engine, self.loop = engine, asyncio.new_event_loop()
        ready = threading.Event()

        def serve():
            asyncio.set_event_loop(self.loop)
            self.server, self.port, _ = self.loop.run_until_complete(start_server(engine, data, "127.0.0.1:0"))
            ready.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(60)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=channel_options(64 << 20))
        self.call = self.channel.stream_stream(ADAPT, request_serializer=lambda b: b,
                                               response_deserializer=pb.CloudFrame.FromString)

    def send(self, frames: list[bytes], timeout: float = 0.5) -> str:
        try:
            for _ in self.call(iter(frames), timeout=timeout):
                pass
        except grpc.RpcError as exc:
            return exc.code().name
        return "OK"

    def health_ms(self) -> float:
        t0 = time.perf_counter()
        reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                                               timeout=1.0)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        return 1000 * (time.perf_counter() - t0)

    def legitimate_round(self) -> list:
        async def body():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=channel_options(64 << 20)) as ch:
                t = GrpcTransport(ch, "check", Hello("n", self.engine.bundle.signature,
                                                      scenario_hash=self.engine.scenario_hash), 1 << 20)
                await t.open()
                first = await t.round(RoundReport("persona-s", 0, 1000))
                arrivals = tuple(Arrival(AdaptRequest(f"dev-{i:06d}", 1, 5, "persona-s", (1, 2, 3)),
                                         first.until_us - 1) for i in range(8))
                last = await t.round(RoundReport("persona-s", first.until_us, None, arrivals))
                await t.close()
                errors = [r for r in last.results if not hasattr(r, "params")]
                assert not errors, errors
                ends = {r.device_id: r.compute_end_us for r in last.results}   # edits come pending, values after
                return sorted((v.device_id, v.prototype_id, ends[v.device_id],
                               {k: a.tobytes() for k, a in v.params.items()}) for v in last.values)
        return asyncio.run(body())

    def stop(self):
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _hello(engine: CloudEngine, **fields) -> bytes:
    good = dict(protocol_version=PROTOCOL_VERSION, node_id="fuzz", model_signature=engine.bundle.signature, codecs=[pb.FLOAT32],
                shard_index=0, shard_count=1, scenario_hash=engine.scenario_hash)
    return pb.DeviceFrame(hello=pb.Hello(**{**good, **fields})).SerializeToString()


def _hostile(engine: CloudEngine, rng: np.random.Generator) -> list[bytes]:
    """One stream of structurally valid frames with hostile values."""
    big = lambda: int(rng.choice([0, 1, -1, 2**31, 2**62, -(2**62), int(rng.integers(-10**6, 10**6))]))  # noqa: E731
    hello = _hello(engine, **{k: v for k, v in {
        "protocol_version": int(rng.choice([3, 0, 99, 2**32 - 1])), "shard_index": int(rng.choice([0, 5, 2**31])),
        "shard_count": int(rng.choice([1, 0, 3])), "model_signature": str(rng.choice([engine.bundle.signature, "x"])),
        "scenario_hash": str(rng.choice([engine.scenario_hash, ""]))}.items() if rng.random() < 0.3})
    requests = [pb.AdaptRequest(device_id=str(rng.choice(["dev-000001", "dev-999999", "", "é" * 30])), seq=abs(big()),
                                issued_us=big(), method=str(rng.choice(["persona-s", "persona-m", "static", "x"])),
                                window=[big() for _ in range(int(rng.integers(0, 80)))], arrived_us=big())
                for _ in range(int(rng.integers(0, 10)))]
    batch = pb.DeviceFrame(requests=pb.RequestBatch(frame_id=abs(big()), method=str(rng.choice(["persona-s", "y"])),
                                                    until_us=big(), next_arrival_us=big(), requests=requests,
                                                    final=bool(rng.random() < 0.7))).SerializeToString()
    order = int(rng.integers(0, 3))
    return [[hello, batch], [batch, hello], [hello, hello, batch]][order]   # in order, before Hello, Hello twice


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--scenario", default="scenarios/quickstart.yaml")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    scenario = load_scenario(args.scenario)
    path, _ = ensure_bundle(scenario, load_dataset(scenario.dataset, scenario.seed), lambda *a: None)
    data = path.read_bytes()
    cloud = Cloud(CloudEngine(scenario, load_bundle(path), len(data)), data)
    rng = np.random.default_rng(args.seed)
    n = args.frames
    plan = {"random-bytes": int(0.4 * n), "cut-short": int(0.2 * n), "hostile-values": int(0.39 * n),
            "floods": max(1, int(0.005 * n)), "oversized": max(1, int(0.005 * n))}
    hello_valid = _hello(cloud.engine)
    flood = pb.DeviceFrame(requests=pb.RequestBatch(frame_id=1, method="persona-s", until_us=0, final=True, requests=[
        pb.AdaptRequest(device_id=f"dev-{i % 40:06d}", seq=i, method="persona-s", window=[1, 2]) for i in range(5000)]))
    makers = {
        "random-bytes": lambda: [rng.bytes(int(rng.integers(0, 400)))],
        "cut-short": lambda: [hello_valid[: int(rng.integers(1, len(hello_valid)))]],
        "hostile-values": lambda: _hostile(cloud.engine, rng),
        "floods": lambda: [hello_valid, flood.SerializeToString()],
        "oversized": lambda: [hello_valid, b"\x0a" + rng.bytes(int(scenario.cloud.max_frame_mb * 2**20) + 1024)],
    }
    fds_before, rss_before = len(os.listdir("/proc/self/fd")), _rss_mb()
    health, classes, sent, t0 = [], {}, 0, time.perf_counter()
    for name, count in plan.items():
        statuses: collections.Counter = collections.Counter()
        for _ in range(count):
            statuses[cloud.send(makers[name](), timeout=5.0 if name in ("floods", "oversized") else 0.5)] += 1
            sent += 1
            if sent % 250 == 0:
                health.append(cloud.health_ms())
                print(f"{sent}/{n} frames; health {health[-1]:.2f} ms", flush=True)
        after = cloud.health_ms()
        health.append(after)
        classes[name] = {"frames": count, "statuses": dict(statuses), "health_ms_after": round(after, 3)}
    fuzz_s = time.perf_counter() - t0
    fds_after, rss_after = len(os.listdir("/proc/self/fd")), _rss_mb()
    fuzzed = cloud.legitimate_round()
    cloud.stop()
    fresh = Cloud(CloudEngine(scenario, load_bundle(path), len(data)), data)
    same = fresh.legitimate_round() == fuzzed
    fresh.stop()
    h = np.asarray(health)
    result = {"scenario": scenario.name, "frames": sent, "seconds": round(fuzz_s, 1), "classes": classes,
              "health_ms": {"p50": round(float(np.percentile(h, 50)), 3), "p99": round(float(np.percentile(h, 99)), 3),
                            "max": round(float(h.max()), 3), "checks": len(h)},
              "rss_mb": {"before": round(rss_before, 1), "after": round(rss_after, 1)},
              "open_fds": {"before": fds_before, "after": fds_after},
              "legitimate_round_same_as_fresh_server": same, "server_alive": True}
    print(result)
    print(f"written: {write_result(args.out, 'fuzz-frames', result)}")
    return 0 if same and h.max() < 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
