"""What planning a device costs, and whether Θb's outputs could be batched across devices.

    python benchmarks/device_planning.py [--devices 1000] [--out benchmarks/results]

Plans the quickstart scaled to N devices (as ``bench sim`` scales it) and times, per device, its
Θb outputs (``shared_outputs``: one backbone forward per device) and its sampled negatives. Then runs
the backbone over 64 devices' first ``max_len`` items in batches of 8, right-padded, and counts the
devices whose outputs are bit-identical to their own forward alone: any that are not means batching
would change results unless the blocks are fixed by device index. Last, stacks sequences of equal
length (no padding at all) for randomly initialised SASRec and GRU4Rec backbones of a few sizes and
counts the same. Writes <out>/device-planning-<host>.json.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from results_file import write_result  # benchmarks/ is on sys.path when a script here runs

from persona_sim.data.dataset import load_dataset
from persona_sim.data.split import split_users
from persona_sim.model.batching import pad_right
from persona_sim.model.metrics import sample_negatives
from persona_sim.model.networks import PrototypeModel
from persona_sim.scenario.files import command_overrides, load_scenario
from persona_sim.scenario.schema import ModelSpec
from persona_sim.sim.device import device_rng, shared_outputs
from persona_sim.train.bundle import ensure_bundle, load_bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = args.devices
    scenario = load_scenario("scenarios/quickstart.yaml", command_overrides(
        [f"devices.count={n}", f"split.device_users={n}", f"dataset.synthetic.users={n + 1800}"], None))
    dataset = load_dataset(scenario.dataset, scenario.seed)
    bundle = load_bundle(ensure_bundle(scenario, dataset, lambda *a: None)[0])
    users = split_users(dataset, scenario).device_users[:n]
    seqs = [np.asarray(dataset.sequences[int(u)]) for u in users]
    positions = [np.arange(scenario.split.context, len(s)) for s in seqs]
    t0 = time.perf_counter()
    for s, p in zip(seqs, positions):
        shared_outputs(bundle, s, p)
    t1 = time.perf_counter()
    for i, (s, p) in enumerate(zip(seqs, positions)):
        sample_negatives(device_rng(scenario.seed, i, 2), dataset.num_items, s, len(p), scenario.eval.negatives)
    t2 = time.perf_counter()
    L = bundle.model_spec.max_len
    first = [s[:L] for s in seqs[:64]]
    with torch.inference_mode():
        alone = [bundle.shared(torch.from_numpy(s[None]))[0] for s in first]
        same = 0
        for lo in range(0, len(first), 8):
            block = first[lo: lo + 8]
            out = bundle.shared(pad_right(block, max(len(s) for s in block)))
            same += sum(torch.equal(out[j, : len(s)], alone[lo + j]) for j, s in enumerate(block))
    stacked = {f"{arch} hidden {hidden}": equal_length_stacking(arch, hidden)
               for arch in ("sasrec", "gru4rec") for hidden in (16, 32, 64)}
    result = {"devices": n, "events": int(sum(len(p) for p in positions)),
              "shared_outputs_ms_per_device": round(1000 * (t1 - t0) / n, 3),
              "negatives_ms_per_device": round(1000 * (t2 - t1) / n, 3),
              "batched_by_8_bit_identical": f"{same} of {len(first)}",
              "stacked_equal_length_bit_identical": stacked}
    print(f"{n} devices: Θb outputs {result['shared_outputs_ms_per_device']} ms per device, negatives "
          f"{result['negatives_ms_per_device']} ms per device; batched by 8, {same} of {len(first)} devices' "
          "outputs bit-identical to their forward alone")
    print("stacked by equal length, no padding, bit-identical to alone:", stacked)
    print("written:", write_result(args.out, "device-planning", result))


@torch.inference_mode()
def equal_length_stacking(arch: str, hidden: int, n: int = 192, max_len: int = 12) -> str:
    """Random backbone, n random sequences of 3..39 items: their first max_len items stacked with the others of
    the same length (up to 64 per call); how many get exactly the outputs of their forward alone."""
    spec = ModelSpec(arch=arch, hidden=hidden, blocks=1, heads=2 if hidden != 32 else 1, max_len=max_len)
    shared = PrototypeModel(60, spec, seed=3).eval().shared
    rng = np.random.default_rng(4)
    seqs = [rng.integers(1, 61, size=int(k))[:max_len] for k in rng.integers(3, 40, size=n)]
    same = 0
    for length in sorted({len(s) for s in seqs}):
        idx = [i for i, s in enumerate(seqs) if len(s) == length]
        for lo in range(0, len(idx), 64):
            block = idx[lo: lo + 64]
            out = shared(torch.from_numpy(np.stack([seqs[i] for i in block])))
            same += sum(torch.equal(out[j], shared(torch.from_numpy(seqs[i][None]))[0]) for j, i in enumerate(block))
    return f"{same} of {n}"


if __name__ == "__main__":
    main()
