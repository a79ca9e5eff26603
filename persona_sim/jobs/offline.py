"""``persona-sim eval``: an offline protocol (``eval.protocol``), over seeds and sweep variants.

For every variant and seed: train (or reuse) the bundle for the protocol, then
rank each test event's item against sampled negatives with each method the
scenario lists; every method sees the same negatives, stored with the run
(``cases-seed-S.npz``).

    leave-one-out  each user's last item (DESIGN §3, the clean default)
    realtime       every interaction after each user's history part, with the
                   interactions before it (``eval.realtime``); also scored per
                   user over several positives, as the authors' code does

Seeds change the initialisation, the training order and the sampled
negatives; the data split is the same for all (it has no randomness).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.dataset import Dataset, load_dataset
from ..data.split import training_data
from ..methods import METHODS, Method
from ..model.metrics import METRICS, USER_METRICS, user_metrics
from ..report.verdict import eval_verdict
from ..scenario.files import Variant
from ..scenario.schema import Scenario
from ..sim.costs import modelled_cost
from ..train.bundle import Bundle, ensure_bundle, load_bundle
from ..train.evaluation import TEST_PURPOSE, CaseSet, build_cases, evaluate, evaluate_on_device, mean_metrics
from ..train.training import SELECT_ON

Progress = Callable[[str, int, int], None]


def _store_cases(path: Path, cases: CaseSet, num_items: int) -> None:
    """The test events every method was scored on: user, candidates (the true item first, then the negatives)."""
    dtype = np.uint16 if num_items < 2**16 else np.uint32
    np.savez_compressed(path, users=cases.users, candidates=cases.candidates.numpy().astype(dtype))


def _evaluate(bundle: Bundle, method: Method, scenario: Scenario, test: CaseSet, progress: Progress) -> dict:
    if method.device is None:
        models = bundle.models if method.predicts_with is None else method.predicts_with(bundle.models)
        return evaluate(models, method.adapter(scenario), test, scenario.model.max_len)
    return evaluate_on_device(bundle.models, method.device(scenario), test, scenario.model.max_len, scenario.seed,
                              lambda done, total: progress(method.name, done, total))


# The bundle's trained parts and where their validation score sits in its meta (a group stage: its editors').
_PARTS = {"prototype": (), "editor": (), "generator": (), "joint": (), "groups": ("group_editors",),
          "joint_groups": ("group_editors",)}


def validation_scores(meta: dict) -> dict[str, float]:
    """Each trained part's best validation score (``train.SELECT_ON``): what every choice on validation compared."""
    out = {}
    for part, path in _PARTS.items():
        entry = meta.get(part)
        for key in path:
            entry = (entry or {}).get(key)
        if entry and f"best_{SELECT_ON}" in entry:
            out[part] = entry[f"best_{SELECT_ON}"]
    return out


def eval_seed(variant: Variant, seed: int, dataset: Dataset, progress: Progress, out: Path | None = None) -> dict:
    """Train (or reuse) and test one variant at one seed -> {method: metrics}, plus timings."""
    scenario = variant.scenario.with_seed(seed)
    t0 = time.perf_counter()
    protocol = scenario.eval.protocol
    path, trained = ensure_bundle(scenario, dataset, progress, protocol)
    bundle = load_bundle(path)
    t1 = time.perf_counter()
    test = build_cases(dataset, training_data(dataset, scenario, protocol).test, scenario, TEST_PURPOSE)
    if out is not None:
        _store_cases(out / f"cases-seed-{seed}.npz", test, dataset.num_items)
    results = {}
    for method in scenario.methods:
        start = time.perf_counter()
        per_case = _evaluate(bundle, METHODS[method], scenario, test, progress)
        seconds = time.perf_counter() - start
        counts = np.bincount(per_case["prototype"], minlength=max(1, scenario.persona.prototypes))
        per_user = user_metrics(test.users, per_case["scores"]) if protocol == "realtime" else {}
        cost = modelled_cost(METHODS[method], scenario, {k: tuple(v.shape[1:]) for k, v in bundle.models.head.items()},
                             bundle.num_items)
        results[method] = dict(mean_metrics(per_case), **{k: float(v.mean()) for k, v in per_user.items()},
                               modelled_ms=None if cost is None else round(cost.total_ms, 3),
                               modelled_compute_ms=None if cost is None else round(cost.compute_ms, 3),
                               cases=len(test.windows), users=len(np.unique(test.users)),
                               ms_per_case=round(1000 * seconds / len(test.windows), 4),
                               prototype_share=[round(float(c) / len(test.windows), 4) for c in counts])
    return {"seed": seed, "bundle": bundle.signature, "trained": trained,
            # what validation chose where the scenario gave a choice (None where it did not)
            "editor_shift": bundle.meta["editor"].get("editor_shift"),
            "groups": bundle.meta.get("groups", {}).get("groups"),
            "joint_groups": bundle.meta.get("joint_groups", {}).get("groups"),
            "validation": validation_scores(bundle.meta),
            "train_seconds": round(t1 - t0, 2), "test_seconds": round(time.perf_counter() - t1, 2),
            "methods": results}


def aggregate(per_seed: list[dict], methods: list[str]) -> dict:
    """Mean and sample standard deviation over seeds, per method and metric."""
    out = {}
    for method in methods:
        rows = [r["methods"][method] for r in per_seed]
        names = [m for m in METRICS + USER_METRICS if m in rows[0]]
        entry = {m: round(float(np.mean([r[m] for r in rows])), 6) for m in names}
        entry["std"] = {m: round(float(np.std([r[m] for r in rows], ddof=1)) if len(rows) > 1 else 0.0, 6)
                        for m in names}
        entry["cases"], entry["users"] = rows[0]["cases"], rows[0]["users"]
        entry["ms_per_case"] = round(float(np.median([r["ms_per_case"] for r in rows])), 4)
        entry["modelled_ms"] = rows[0].get("modelled_ms")
        entry["modelled_compute_ms"] = rows[0].get("modelled_compute_ms")
        out[method] = entry
    return out


def run_eval(variants: list[Variant], seeds: list[int], out: Path, progress: Progress,
             facts: dict | None = None) -> dict:
    """Evaluate every variant at every seed; write summary.json and report.md to ``out``."""
    from ..report.eval_report import plot_sweeps, render

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    datasets: dict[str, Dataset] = {}
    results = []
    total, done = len(variants) * len(seeds), 0
    progress("eval", 0, total)
    for variant in variants:
        spec = variant.scenario.dataset
        key = spec.model_dump_json()
        if key not in datasets:
            datasets[key] = load_dataset(spec, variant.scenario.seed)
        per_seed = []
        for seed in seeds:
            per_seed.append(eval_seed(variant, seed, datasets[key], progress, out if len(variants) == 1 else None))
            done += 1
            progress("eval", done, total)
        results.append({"label": variant.label, "settings": variant.settings,
                        "methods": aggregate(per_seed, variant.scenario.methods),
                        "verdict": eval_verdict(per_seed), "per_seed": per_seed})
    first = variants[0].scenario
    summary = {
        "scenario": first.name, "protocol": first.eval.protocol,
        "realtime": first.eval.realtime.model_dump(mode="json") if first.eval.protocol == "realtime" else None,
        "seeds": seeds, "dataset": first.dataset.name,
        "model": first.model.model_dump(mode="json"), "negatives": first.eval.negatives,
        "variants": results, **(facts or {}),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    if len(results) == 1:
        summary["methods"] = results[0]["methods"]   # the same top-level shape as a run's summary.json
    summary["plots"] = plot_sweeps(out, summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(render(summary))
    return summary
