"""`persona-sim bench cloud`: what one real cloud node serves, against what its parts could.

A real `persona-sim cloud` process is started on a loopback port, and this process drives it as a device
node would: one Adapt stream, lockstep rounds of K requests each (K devices' windows in one report frame),
every reply back in the same round (the report promises no arrival for 10 virtual seconds, so the cloud's
clock finishes every batch before it answers). The edits' values follow from the cloud's values thread,
decoded here as a device node decodes them; rounds run at most ``lockstep.BACKLOG_ROWS + FLUSH_ROWS``
edits (and a round's K) ahead of their values, so counting edits answered counts values delivered, to
within that.
Measured per round: the wall time from sending the report to holding every decoded edit (the node's view
of the server's latency), the cloud's own time on the round, and the CPU time each process spent per
round (the cloud node's, all its threads; this one's).
In the same run, interleaved with it:

  - a bare gRPC aio echo server, another process, answering each frame with one of the size the cloud's
    reply had (the transport's ceiling: what gRPC and Python cost with no work at all);
  - the batched editor alone: ``CloudEngine.compute`` on the same K windows in this process (the compute
    ceiling, no transport).

Each cell runs for ``--seconds`` after a warm-up; cells are interleaved (K by K, then again) and medians
of the repeats reported, with the ratios the issue tracker asks for.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from persona_sim.data.dataset import load_dataset
from persona_sim.jobs.bench_sim import scaled_settings
from persona_sim.runtime import tune_for_serving
from persona_sim.scenario.files import command_overrides, load_scenario
from persona_sim.sim.cloud_engine import CloudEngine
from persona_sim.train.bundle import ensure_bundle, load_bundle
from persona_sim.wire.codec import channel_options, report_frames
from persona_sim.wire.messages import AdaptRequest, Arrival, Hello, RoundReport, device_id

from .client import GrpcTransport

ECHO_METHOD = "/persona_sim.bench.Echo/PingPong"
QUIET_US = 10_000_000          # each report promises no arrival for this long: the round ends every batch
WARMUP_ROUNDS = 5


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("cloud", help="adaptations per second of a real cloud node over loopback gRPC, beside "
                                       "a bare gRPC echo and the batched editor alone",
                         description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("scenario", nargs="?", default="scenarios/quickstart.yaml", help="scenario YAML file")
    p.add_argument("--k", type=int, nargs="+", default=[1, 8, 64, 256], help="requests per round")
    p.add_argument("--method", default="persona-s", help="the method the requests ask for (default persona-s)")
    p.add_argument("--seconds", type=float, default=3.0, help="wall time per cell (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats per cell (default 3; medians)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario key (both ends)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="where bench-cloud-HOST.json goes")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=run_bench_cloud)


# ---- the echo server (its own process) ----------------------------------------------------------

async def _echo(port_file: Path) -> None:
    async def pingpong(requests, context):
        async for frame in requests:                  # the first 8 bytes say how large the answer must be
            yield bytes(int.from_bytes(frame[:8], "little"))
    handler = grpc.method_handlers_generic_handler("persona_sim.bench.Echo", {
        "PingPong": grpc.stream_stream_rpc_method_handler(pingpong)})
    server = grpc.aio.server(options=channel_options(64 << 20))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    port_file.write_text(str(port))
    await server.wait_for_termination()


def echo_main() -> None:
    tune_for_serving()                        # as the cloud node does: the transport's ceiling, same settings
    asyncio.run(_echo(Path(sys.argv[1])))


def _start(cmd: list[str], port_file: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{' '.join(cmd[:4])} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc, f"127.0.0.1:{port_file.read_text().strip()}"


# ---- the load -----------------------------------------------------------------------------------

class Load:
    """K requests per round for K distinct devices (K <= devices.count), each device's seq rising by round."""

    def __init__(self, scenario, num_items: int, method: str, k: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.method, self.k, self.count = method, k, scenario.devices.count
        self.windows = [tuple(int(i) for i in rng.integers(1, num_items + 1, scenario.persona.window))
                        for _ in range(k)]
        self.round = 0

    def requests(self, t_us: int) -> list[AdaptRequest]:
        self.round += 1
        return [AdaptRequest(device_id(j), self.round, t_us, self.method, self.windows[j]) for j in range(self.k)]


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used, all its threads; None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive_cloud(transport: GrpcTransport, load: Load, seconds: float, cloud_pid: int) -> dict:
    """Rounds of K for ``seconds`` (after a warm-up): per-round latencies, the cloud's own times, and the CPU
    time each process (the cloud node's, this one's) spent per round."""
    until, front = 0, 0
    report = RoundReport(load.method, 0, 1, ())            # the run starts: nothing can have arrived yet
    reply = await transport.round(report)
    front, until = 1, reply.until_us
    lat, server, rounds, reply_bytes = [], [], 0, 0
    t_end = None
    while t_end is None or time.perf_counter() < t_end:
        arrivals = tuple(Arrival(r, front) for r in load.requests(front))
        t0 = time.perf_counter_ns()
        reply = await transport.round(RoundReport(load.method, until, until + QUIET_US, arrivals))
        dt = time.perf_counter_ns() - t0
        edits = [r for r in reply.results if hasattr(r, "params")]
        if len(edits) != load.k:
            raise RuntimeError(f"a round of {load.k} requests got {len(edits)} edits back: "
                               f"{[r for r in reply.results if not hasattr(r, 'params')][:2]}")
        front, until = until + QUIET_US, reply.until_us
        rounds += 1
        if rounds == WARMUP_ROUNDS:
            t_end = time.perf_counter() + seconds
            lat, server = [], []
            cpu0 = _cpu_s(cloud_pid), time.process_time()
        else:
            lat.append(dt)
            server.append(reply.server_ns)
        reply_bytes = sum(e.wire_bytes for e in edits)
    cloud_cpu = None if cpu0[0] is None else _cpu_s(cloud_pid) - cpu0[0]
    return {"rounds": len(lat), "wall_s": sum(lat) / 1e9, "latency_ns": lat, "server_ns": server,
            "reply_bytes": reply_bytes, "cloud_cpu_s": cloud_cpu, "load_cpu_s": time.process_time() - cpu0[1]}


async def _drive_echo(target: str, request_bytes: int, reply_bytes: int, seconds: float) -> dict:
    async with grpc.aio.insecure_channel(target, options=channel_options(64 << 20)) as channel:
        call = channel.stream_stream(ECHO_METHOD)()
        frame = reply_bytes.to_bytes(8, "little") + bytes(max(0, request_bytes - 8))
        lat, rounds, t_end = [], 0, None
        while t_end is None or time.perf_counter() < t_end:
            t0 = time.perf_counter_ns()
            await call.write(frame)
            await call.read()
            rounds += 1
            if rounds == WARMUP_ROUNDS:
                t_end, lat = time.perf_counter() + seconds, []
            else:
                lat.append(time.perf_counter_ns() - t0)
        await call.done_writing()
    return {"rounds": len(lat), "wall_s": sum(lat) / 1e9, "latency_ns": lat}


def _editor_alone(engine: CloudEngine, load: Load, seconds: float) -> dict:
    for _ in range(WARMUP_ROUNDS):
        engine.compute(load.method, load.requests(0))
    lat, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        requests = load.requests(0)
        t0 = time.perf_counter_ns()
        engine.compute(load.method, requests)
        lat.append(time.perf_counter_ns() - t0)
    return {"rounds": len(lat), "wall_s": sum(lat) / 1e9, "latency_ns": lat}


def _rate(cell: dict, k: int) -> dict:
    lat = np.asarray(cell["latency_ns"]) / 1e6
    out = {"rounds": cell["rounds"], "adaptations_per_s": round(k * cell["rounds"] / cell["wall_s"], 1),
           "rounds_per_s": round(cell["rounds"] / cell["wall_s"], 1),
           "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
           "latency_ms_p99": round(float(np.percentile(lat, 99)), 3)}
    if "server_ns" in cell:
        out["cloud_round_ms_p50"] = round(float(np.median(cell["server_ns"])) / 1e6, 3)
        out["load_cpu_ms_per_round"] = round(cell["load_cpu_s"] * 1e3 / cell["rounds"], 3)
        if cell["cloud_cpu_s"] is not None:     # every thread of the cloud node (the edit values' one too)
            out["cloud_cpu_ms_per_round"] = round(cell["cloud_cpu_s"] * 1e3 / cell["rounds"], 3)
            out["cpu_us_per_adaptation"] = round((cell["cloud_cpu_s"] + cell["load_cpu_s"]) * 1e6
                                                 / (cell["rounds"] * k), 2)
    return out


def _cores() -> int:
    """The cores this process (and so the cloud and echo it starts) may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _median_cell(cells: list[dict]) -> dict:
    return {key: statistics.median(c[key] for c in cells) for key in cells[0]}


async def _bench(args, scenario, bundle_path: Path, bundle, progress) -> dict:
    engine = CloudEngine(scenario, bundle, bundle_path.stat().st_size, cloud_id="bench")
    overrides = [a for s in (args.set or []) for a in ("--set", s)]
    with tempfile.TemporaryDirectory(prefix="bench-cloud-") as tmp:
        cloud, target = _start([sys.executable, "-m", "persona_sim.cli", "cloud", "--scenario", str(args.scenario),
                                *overrides, "--bundle", str(bundle_path), "--listen", "127.0.0.1:0", "--port-file",
                                f"{tmp}/cloud.port", "--quiet", "--log-level", "warning"],
                               Path(tmp, "cloud.port"), Path(tmp, "cloud.log"))
        echo, echo_target = _start([sys.executable, "-c", "from device_node.bench_cloud import echo_main; echo_main()",
                                    f"{tmp}/echo.port"], Path(tmp, "echo.port"), Path(tmp, "echo.log"))
        cells: dict[tuple[int, str], list[dict]] = {}
        try:
            options = channel_options(int(scenario.cloud.max_frame_mb * 2**20))
            async with grpc.aio.insecure_channel(target, options=options) as channel:
                for r in range(args.repeats):
                    for k in args.k:
                        hello = Hello(f"bench-{os.getpid()}-{r}-{k}", bundle.signature,
                                      scenario_hash=scenario.run_hash())
                        transport = GrpcTransport(channel, target, hello, engine.max_frame_bytes)
                        await transport.open()
                        load = Load(scenario, bundle.num_items, args.method, k)
                        cloud_cell = await _drive_cloud(transport, load, args.seconds, cloud.pid)
                        await transport.close()
                        request_bytes = sum(len(f.SerializeToString()) for f in _report_frames(load, engine))
                        echo_cell = await _drive_echo(echo_target, request_bytes, cloud_cell["reply_bytes"],
                                                      args.seconds)
                        editor_cell = _editor_alone(engine, Load(scenario, bundle.num_items, args.method, k),
                                                    args.seconds)
                        for name, cell in (("cloud", cloud_cell), ("echo", echo_cell), ("editor", editor_cell)):
                            cells.setdefault((k, name), []).append(_rate(cell, k))
                        c = cells[(k, "cloud")][-1]
                        progress(f"repeat {r + 1}/{args.repeats}, K={k}: cloud {c['adaptations_per_s']:,.0f} "
                                 f"adaptations/s (p50 {c['latency_ms_p50']} ms), echo "
                                 f"{cells[(k, 'echo')][-1]['rounds_per_s']:,.0f} rounds/s, editor alone "
                                 f"{cells[(k, 'editor')][-1]['adaptations_per_s']:,.0f} adaptations/s")
        finally:
            for proc in (cloud, echo):
                proc.terminate()
                proc.wait(timeout=30)
    rows = []
    for k in args.k:
        cloud, echo, editor = (_median_cell(cells[(k, n)]) for n in ("cloud", "echo", "editor"))
        row = {"k": k, "cloud": cloud, "echo": echo, "editor_alone": editor,
               "cloud_vs_editor": round(cloud["adaptations_per_s"] / editor["adaptations_per_s"], 3),
               "cloud_vs_echo_rounds": round(cloud["rounds_per_s"] / echo["rounds_per_s"], 3)}
        if "cpu_us_per_adaptation" in cloud:  # the most the cores could serve at what each adaptation costs
            row["cpu_ceiling_adaptations_per_s"] = round(_cores() * 1e6 / cloud["cpu_us_per_adaptation"], 1)
            row["cloud_vs_cpu_ceiling"] = round(cloud["adaptations_per_s"] / row["cpu_ceiling_adaptations_per_s"], 3)
        rows.append({**row, "repeats": {n: cells[(k, n)] for n in ("cloud", "echo", "editor")}})
    return {"scenario": str(args.scenario), "overrides": args.set or [], "method": args.method,
            "seconds_per_cell": args.seconds, "repeats": args.repeats, "cpus": _cores(),
            "edit_codec": scenario.cloud.edit_codec, "rows": rows}


def _report_frames(load: Load, engine: CloudEngine):
    arrivals = tuple(Arrival(r, 0) for r in load.requests(0))
    return report_frames(1, RoundReport(load.method, 0, None, arrivals), engine.max_frame_bytes)


def render(result: dict) -> str:
    lines = [f"{result['method']}, {result['scenario']}: medians of {result['repeats']} interleaved runs; "
             f"CPU ceiling: {result['cpus']} core(s) / the CPU one adaptation cost both processes",
             "    K   cloud adapt/s   p50 ms   p99 ms   echo rounds/s   editor alone adapt/s   cloud/editor  "
             "cloud/echo (rounds)   CPU ms/round: cloud  load   CPU µs/adapt   cloud/CPU ceiling", "-" * 176]
    for r in result["rows"]:
        c, e, d = r["cloud"], r["echo"], r["editor_alone"]
        cloud_cpu, per, ceiling = (c.get("cloud_cpu_ms_per_round"), c.get("cpu_us_per_adaptation"),
                                   r.get("cloud_vs_cpu_ceiling"))
        lines.append(f"{r['k']:>5}  {c['adaptations_per_s']:>14,.0f}  {c['latency_ms_p50']:>7.2f}  "
                     f"{c['latency_ms_p99']:>7.2f}  {e['rounds_per_s']:>14,.0f}  {d['adaptations_per_s']:>21,.0f}  "
                     f"{r['cloud_vs_editor']:>12.2f}  {r['cloud_vs_echo_rounds']:>19.2f}  "
                     f"{'n/a' if cloud_cpu is None else f'{cloud_cpu:.2f}':>19}  {c['load_cpu_ms_per_round']:>5.2f}  "
                     f"{'n/a' if per is None else f'{per:.1f}':>13}  "
                     f"{'n/a' if ceiling is None else f'{ceiling:.2f}':>18}")
    return "\n".join(lines)


def run_bench_cloud(args: argparse.Namespace) -> int:
    import torch
    torch.set_num_threads(1)                  # as the cloud node runs
    overrides = command_overrides(args.set, None)
    scenario = load_scenario(args.scenario, overrides)
    if max(args.k) > scenario.devices.count:  # a round holds one request per device at most: scale it up
        overrides = scaled_settings(Path(args.scenario), max(args.k), overrides)
        args.set = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
        scenario = load_scenario(args.scenario, overrides)
    dataset = load_dataset(scenario.dataset, scenario.seed)
    bundle_path, _ = ensure_bundle(scenario, dataset, lambda *a: None)
    tune_for_serving()                        # as a device node does
    progress = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    result = asyncio.run(_bench(args, scenario, bundle_path, load_bundle(bundle_path), progress))
    print(render(result))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-cloud-{platform.node() or 'host'}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {path}")
    return 0
