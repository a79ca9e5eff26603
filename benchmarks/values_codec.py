"""What encoding and decoding a round's reply costs: 64 pending edits, then the same with 512 edits' values.

    python benchmarks/values_codec.py [SCENARIO] [--tuned]      (default scenarios/drift_beauty.yaml)

Real persona-s edits from the scenario's bundle; prints the median of 20 of each step: encoding 512 edits'
values (``codec.values_blocks``, on the cloud's values thread), building the serialized frames
(``codec.reply_frames``), parsing them, and decoding them (``codec.reply_from_pb``). ``--tuned``: with the
node processes' allocator and collector settings (``persona_sim.runtime``).
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

from device_node.bench_cloud import Load
from persona_sim.data.dataset import load_dataset
from persona_sim.runtime import tune_for_serving
from persona_sim.scenario.files import load_scenario
from persona_sim.sim.cloud_engine import CloudEngine
from persona_sim.train.bundle import ensure_bundle, load_bundle
from persona_sim.wire import codec
from persona_sim.wire.messages import EditResult, RoundReply
from persona_sim.wire.proto import persona_pb2 as pb


def _ms(step, repeats: int = 20) -> float:
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 2)


def main() -> None:
    torch.set_num_threads(1)
    args = [a for a in sys.argv[1:] if a != "--tuned"]
    scenario = load_scenario(args[0] if args else "scenarios/drift_beauty.yaml", {})
    path, _ = ensure_bundle(scenario, load_dataset(scenario.dataset, scenario.seed), lambda *a: None)
    bundle = load_bundle(path)
    engine = CloudEngine(scenario, bundle, path.stat().st_size)
    load = Load(scenario, bundle.num_items, "persona-s", min(256, scenario.devices.count))
    values = [v for _ in range(-(-512 // load.k)) for v in engine.compute("persona-s", load.requests(0))][:512]
    pending = [EditResult(v.device_id, v.seq, 0, None, 0.0, wire_bytes=33_600, enqueued_us=10**9,
                          compute_start_us=10**9, compute_end_us=10**9 + 5, departed_us=10**9 + 9) for v in values[:64]]
    cap = engine.max_frame_bytes
    if "--tuned" in sys.argv:                 # as a node process runs (persona_sim.runtime)
        print(tune_for_serving())
    blocks = codec.values_blocks(values, "FLOAT32", cap)
    print(f"512 edits' values: values_blocks (the cloud's values thread) "
          f"{_ms(lambda: codec.values_blocks(values, 'FLOAT32', cap))} ms")
    for name, reply in (("64 pending edits", RoundReply(pending, 5)),
                        ("64 pending edits + 512 edits' values", RoundReply(pending, 5, value_blocks=blocks))):
        raw = codec.reply_frames(1, reply, cap)
        parsed = [pb.CloudFrame.FromString(r).edits for r in raw]
        print(f"{name}: {sum(map(len, raw)) / 1e6:.1f} MB in {len(raw)} frame(s); "
              f"reply_frames {_ms(lambda: codec.reply_frames(1, reply, cap))} ms, "
              f"parse {_ms(lambda: [pb.CloudFrame.FromString(r) for r in raw])} ms, "
              f"reply_from_pb {_ms(lambda: codec.reply_from_pb(parsed))} ms")

if __name__ == "__main__":
    main()
