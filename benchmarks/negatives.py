"""Sampled negatives, row by row (as first written) against every row's first draw at once (today's
``sample_negatives``): the same items, the time per device.

    python benchmarks/negatives.py [--repeats 7] [--devices 300] [--out benchmarks/results]

Each device draws 99 negatives for each of 27 events from a catalogue of 1,000 items (the quickstart's
sizes, a device's history excluded), and for 12,101 items (Amazon Beauty's). The two alternate; each
figure is the median over repeats of the mean per device. Writes <out>/negatives-<host>.json.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from results_file import write_result  # benchmarks/ is on sys.path when a script here runs

from persona_sim.model.metrics import rows_one_by_one, sample_negatives


def row_by_row(rng: np.random.Generator, num_items: int, exclude: np.ndarray, n: int, k: int) -> np.ndarray:
    excluded = np.zeros(num_items + 1, dtype=bool)
    excluded[0] = True
    excluded[exclude] = True
    return rows_one_by_one(rng, excluded, n, k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--devices", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    result = {}
    for catalogue in (1000, 12101):
        histories = [np.random.default_rng(d).integers(1, catalogue + 1, size=30) for d in range(args.devices)]
        times: dict[str, list[float]] = {"row_by_row": [], "all_rows_at_once": []}
        for _ in range(args.repeats):
            for name, fn in (("row_by_row", row_by_row), ("all_rows_at_once", sample_negatives)):
                t0 = time.perf_counter()
                drawn = [fn(np.random.default_rng(d), catalogue, h, 27, 99) for d, h in enumerate(histories)]
                times[name].append((time.perf_counter() - t0) / args.devices * 1e6)
                if name == "row_by_row":
                    reference = drawn
                else:
                    assert all(np.array_equal(a, b) for a, b in zip(reference, drawn)), "the two drew different items"
        result[f"items_{catalogue}"] = {name: {"us_per_device_median": round(statistics.median(v), 1),
                                               "runs": [round(x, 1) for x in v]} for name, v in times.items()}
        r = result[f"items_{catalogue}"]
        print(f"{catalogue:6d} items: row by row {r['row_by_row']['us_per_device_median']:8.1f} µs per device, "
              f"all rows at once {r['all_rows_at_once']['us_per_device_median']:8.1f} µs (the same items)")
    print("written:", write_result(args.out, "negatives", result))


if __name__ == "__main__":
    main()
