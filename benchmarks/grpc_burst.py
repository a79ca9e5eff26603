"""What moving a flush of edit values costs gRPC alone: a bare aio stream, no protobuf, no work.

    python benchmarks/grpc_burst.py [--mb 17] [--messages 1 5] [--every 1 8] [--rounds 200]

A server process answers each small frame with a tiny one, and every ``every``-th with ``messages``
frames that together hold ``mb`` megabytes (as a cloud round carrying the values of 512 Beauty-size
float32 edits, 33 KB each, does). Prints and writes (``benchmarks/results/grpc-burst-HOST.json``) the
median wall time of a burst round and of a small round, per setting.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

from device_node.bench_cloud import _start

OPTIONS = [("grpc.max_receive_message_length", 80 << 20), ("grpc.max_send_message_length", 80 << 20)]
METHOD = "/persona_sim.bench.Burst/PingPong"


async def _serve(port_file: Path) -> None:
    async def pingpong(frames, context):
        async for frame in frames:            # 8 bytes: how many messages, 8 bytes: how large each
            count, size = int.from_bytes(frame[:8], "little"), int.from_bytes(frame[8:16], "little")
            for _ in range(count):
                yield bytes(size)
    handler = grpc.method_handlers_generic_handler("persona_sim.bench.Burst", {
        "PingPong": grpc.stream_stream_rpc_method_handler(pingpong)})
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port_file.write_text(str(server.add_insecure_port("127.0.0.1:0")))
    await server.start()
    await server.wait_for_termination()


async def _drive(target: str, messages: int, size: int, every: int, rounds: int) -> dict:
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        call = channel.stream_stream(METHOD)()
        burst, small = [], []
        for i in range(rounds):
            big = i % every == 0
            count, each = (messages, size) if big else (1, 100)
            t0 = time.perf_counter()
            await call.write(count.to_bytes(8, "little") + each.to_bytes(8, "little") + bytes(3000))
            for _ in range(count):
                await call.read()
            (burst if big else small).append(time.perf_counter() - t0)
        await call.done_writing()
    return {"burst_ms": round(statistics.median(burst[2:]) * 1e3, 3),
            "small_ms": round(statistics.median(small) * 1e3, 3) if small else None, "bursts": len(burst) - 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=17.0)
    ap.add_argument("--messages", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--every", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, target = _start([sys.executable, __file__, "--serve-at", f"{tmp}/port"], Path(tmp, "port"),
                                Path(tmp, "server.log"))
        try:
            rows = []
            for messages in args.messages:
                for every in args.every:
                    size = int(args.mb * 1e6 / messages)
                    row = {"mb": args.mb, "messages": messages, "every": every,
                           **asyncio.run(_drive(target, messages, size, every, args.rounds))}
                    print(row, flush=True)
                    rows.append(row)
        finally:
            server.terminate()
            server.wait()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"grpc-burst-{platform.node() or 'host'}.json"
    path.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-at":
        asyncio.run(_serve(Path(sys.argv[2])))
    else:
        main()
