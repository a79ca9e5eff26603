"""How an editor does on validation only — as the cases are, and after a constructed takeover.

    PERSONA_SIM_DATA=../shared/data python benchmarks/editor_validation.py scenarios/drift_beauty.yaml \
        [--set train.editor_shift=1.0 ...] [--seeds 3] [--out benchmarks/results] [--name NAME]

For each seed it trains (or loads from the cache) the scenario's bundle under its `eval.protocol` and scores
the validation cases (never the test events) with the unedited global prototype and with Persona (s). It
then builds takeover cases: each validation user's history is replaced by another validation user's (all
but its last k items), followed by this user's last k items, with this user's next item and negatives — what
a device looks like k interactions after someone else took it over. NDCG@10 for k = 0 (as is), 3 and W.
Writes <out>/editor-validation-<name>-<host>.json and prints one line per seed.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from results_file import write_result  # benchmarks/ is on sys.path when a script here runs

from persona_sim.data.dataset import load_dataset
from persona_sim.data.split import training_data
from persona_sim.model.adaptation import edit_global, unedited
from persona_sim.model.batching import pad_right
from persona_sim.scenario.files import command_overrides, load_scenario
from persona_sim.train.bundle import ensure_bundle, load_bundle
from persona_sim.train.evaluation import VALID_PURPOSE, CaseSet, build_cases, evaluate


def takeover(cases: CaseSet, k: int, window: int, rng: np.random.Generator) -> CaseSet:
    """Every case's history: another case's history less its last k items, then this case's last k items."""
    donors = rng.permutation(len(cases.histories))
    hists = [np.concatenate([cases.histories[d][:-k] if len(cases.histories[d]) > k else cases.histories[d],
                             h[-k:]]) for d, h in zip(donors, cases.histories)]
    return CaseSet(cases.users, hists, pad_right([h[-window:] for h in hists], window), cases.candidates)


def one_seed(path: str, overrides: dict, seed: int) -> dict:
    scenario = load_scenario(path, {**overrides, "seed": seed})
    dataset = load_dataset(scenario.dataset, scenario.seed)
    protocol = scenario.eval.protocol
    bundle = load_bundle(ensure_bundle(scenario, dataset, lambda *a: None, protocol)[0])
    valid = build_cases(dataset, training_data(dataset, scenario, protocol).valid, scenario, VALID_PURPOSE)
    W, L = scenario.persona.window, scenario.model.max_len
    rng = np.random.default_rng([seed, 0x7A0])
    out = {"seed": seed, "bundle": bundle.signature, "editor_shift": bundle.meta["editor"].get(
        "editor_shift", scenario.train.editor_shift), "cases": len(valid.histories)}
    for k in (0, 3, W):
        cases = valid if k == 0 else takeover(valid, k, W, rng)
        static = float(evaluate(bundle.models, unedited, cases, L)["ndcg@10"].mean())
        persona = float(evaluate(bundle.models, edit_global, cases, L)["ndcg@10"].mean())
        out[f"k={k}"] = {"static": round(static, 4), "persona-s": round(persona, 4),
                         "gain": round(persona / static - 1, 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--name", default=None, help="results file name (default: the scenario's name)")
    args = ap.parse_args()
    overrides = command_overrides(args.set)
    first = load_scenario(args.scenario, overrides).seed
    rows = []
    for seed in range(first, first + args.seeds):
        rows.append(one_seed(args.scenario, overrides, seed))
        r = rows[-1]
        print(f"seed {seed} (editor_shift {r['editor_shift']}): NDCG@10 static / Persona (s) / gain  " + "  ".join(
            f"{k}: {r[k]['static']:.4f} / {r[k]['persona-s']:.4f} / {100 * r[k]['gain']:+.1f}%"
            for k in r if k.startswith("k=")), flush=True)
    name = args.name or load_scenario(args.scenario, overrides).name
    print(write_result(args.out, f"editor-validation-{name}", {
        "scenario": args.scenario, "set": args.set, "data": os.environ.get("PERSONA_SIM_DATA"), "seeds": rows}))


if __name__ == "__main__":
    main()
