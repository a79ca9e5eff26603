"""Persona trained with a frozen backbone or jointly, chosen per seed on validation: what it would score.

    python benchmarks/training_choice.py SUMMARY.json ... [--out benchmarks/results]

Each SUMMARY is a ``persona-sim eval`` summary whose methods include persona-s, persona-m, persona-joint and
persona-joint-m (and static). Per seed, Persona (s) is the frozen-backbone editor (``persona-s``) or the joint
one (``persona-joint``), whichever scored higher on validation (the summary's ``validation``: ``editor``
against ``joint``); Persona (m) likewise (``groups`` against ``joint_groups``). Nothing is chosen on test.
Prints each summary's paired per-seed difference from static (NDCG@5), as the eval report's verdict does, and
writes <out>/training-choice-<host>.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from results_file import write_result  # benchmarks/ is on sys.path when a script here runs

from persona_sim.report.verdict import eval_verdict

CHOICES = {"persona-s (chosen)": (("editor", "persona-s"), ("joint", "persona-joint")),
           "persona-m (chosen)": (("groups", "persona-m"), ("joint_groups", "persona-joint-m"))}


def choose(per_seed: list[dict]) -> tuple[list[dict], dict[str, list[str]]]:
    """Per seed, each choice's method by validation; the per-seed rows the verdict reads, and what was kept."""
    rows, kept = [], {name: [] for name in CHOICES}
    for r in per_seed:
        valid, methods = r["validation"], {"static": r["methods"]["static"]}
        for name, options in CHOICES.items():
            _, method = max(options, key=lambda o: valid[o[0]])      # the first on a tie: the frozen backbone
            methods[name] = r["methods"][method]
            kept[name].append(method)
        rows.append({"methods": methods})
    return rows, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summaries", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    result = {}
    for path in args.summaries:
        summary = json.loads(path.read_text())
        rows, kept = choose(summary["variants"][0]["per_seed"])
        verdict = eval_verdict(rows)
        name = path.parent.name if path.name == "summary.json" else path.stem    # an eval directory, or a copy
        result[name] = {"protocol": summary["protocol"], "model": summary["model"], "verdict": verdict,
                             "kept": kept}
        print(f"{name} ({summary['protocol']}, {summary['model']['arch']}, hidden {summary['model']['hidden']}):")
        for name, v in verdict.items():
            print(f"  {name}: {v['delta']:+.4f} ± {v['delta_std']:.4f} ({v['relative']:+.1%})"
                  f"{', clear' if v['clear_gain'] else ''}; kept {', '.join(kept[name])}")
    print("written:", write_result(args.out, "training-choice", result))


if __name__ == "__main__":
    main()
