"""Planning a shard in one process against over every core: wall time of each, and that the plans are equal.

    python benchmarks/plan_workers.py DEVICES WORKERS [WORKERS ...]     # e.g. 20000 2 1

The quickstart scaled to DEVICES devices (every 5th interaction), one torch thread as runs plan.
"""
import sys
import time
from pathlib import Path

import numpy as np

from persona_sim.data.dataset import load_dataset
from persona_sim.jobs.bench_sim import scaled_settings
from persona_sim.jobs.shard import plan_shard
from persona_sim.scenario.files import load_scenario
from persona_sim.train.bundle import ensure_bundle, load_bundle, reproducible_torch

n = int(sys.argv[1])
f = Path("scenarios/quickstart.yaml")
sc = load_scenario(f, scaled_settings(f, n, {"devices.policy.every": 5}))
ds = load_dataset(sc.dataset, sc.seed)
bp, _ = ensure_bundle(sc, ds, None)
b = load_bundle(bp)
with reproducible_torch():
    out = {}
    for w in [int(x) for x in sys.argv[2:]]:
        t = time.perf_counter(); out[w] = plan_shard(sc, b, ds, 0, 1, workers=w); print(w, round(time.perf_counter() - t, 2), flush=True)
ws = list(out)
for w in ws[1:]:
    for a, c in zip(out[ws[0]], out[w]):
        for k in ("items", "positions", "times_us", "cands", "h"):
            assert np.array_equal(getattr(a, k), getattr(c, k)) and getattr(a, k).dtype == getattr(c, k).dtype, (w, a.index, k)
        assert a.shifts == c.shifts
    print("equal", w)
