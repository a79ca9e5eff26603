"""Time and peak memory of the synthetic generator, up to a million devices' worth of sequences.

    python benchmarks/synthetic_scale.py [--users 10000 100000 1000000] [--items 50000] [--categories 50]
                                         [--repeats 3] [--out benchmarks/results]

Each run is a fresh process (so its peak RSS is its own): it imports the
package, generates the dataset and computes its fingerprint (which reads every
interaction). Reports the median wall time of ``--repeats`` runs and the largest
peak RSS, against the size of the interactions themselves (8 bytes each) and
the baseline RSS of a process that only imports the package.
Writes <out>/synthetic-scale-<host>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from results_file import write_result  # benchmarks/ is on sys.path when a script here runs

CHILD = r"""
import json, resource, sys, time
from persona_sim.scenario.schema import SyntheticSpec
from persona_sim.data.synthetic import generate
users, items, cats = map(int, sys.argv[1:4])
base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
ds = generate(SyntheticSpec(users=users, items=items, categories=cats), 0) if users else None
fp = ds.fingerprint() if ds else ""
secs = time.perf_counter() - t0
print(json.dumps({"seconds": secs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "import_rss_mb": base_kb / 1024, "interactions": ds.num_interactions if ds else 0,
                  "fingerprint": fp}))
"""


def run_once(users: int, items: int, categories: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(users), str(items), str(categories)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--categories", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    baseline = run_once(0, args.items, args.categories)["peak_rss_mb"]
    rows = []
    for users in args.users:
        runs = [run_once(users, args.items, args.categories) for _ in range(args.repeats)]
        assert len({r["fingerprint"] for r in runs}) == 1, "same seed must give the same data"
        row = {"users": users, "interactions": runs[0]["interactions"],
               "seconds_median": round(statistics.median(r["seconds"] for r in runs), 2),
               "seconds_all": [round(r["seconds"], 2) for r in runs],
               "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
               "interaction_mb": round(runs[0]["interactions"] * 8 / 2**20, 1)}
        rows.append(row)
        print(f"{users:>9,} users  {row['interactions']:>11,} interactions  {row['seconds_median']:>7.2f} s  "
              f"peak RSS {row['peak_rss_mb']:>7.1f} MB  (interactions alone {row['interaction_mb']} MB)", flush=True)
    result = {"host": platform.node(), "python": platform.python_version(), "items": args.items,
              "categories": args.categories, "repeats": args.repeats, "import_only_rss_mb": round(baseline, 1),
              "rows": rows}
    path = write_result(args.out, "synthetic-scale", result)
    print(f"import-only RSS {baseline:.1f} MB; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
