"""`persona-sim calibrate`: fit the `model` compute cost to measurements of the real editor.

For each adaptive method of a scenario and each batch size B, the call the cloud
node makes for a batch of B requests (``CloudEngine.compute``: padding, the
method's batched edit, conversion to replies) is timed
``repeats`` times after a warm-up; the median is one measurement. The cost model

    t(B, P) = base_ms + B · (per_request_ms + P · per_prototype_ms)

(P: prototype editors a request evaluates: 1, or N_M for the group methods) is
fitted to them by least squares with non-negative coefficients. The result is
printed as the `cloud:` keys to paste into a scenario, and written as JSON with
every measurement and the fit's error on each.
"""
from __future__ import annotations

import itertools
import time

import numpy as np

from .. import methods
from ..scenario.schema import Scenario
from ..sim.cloud_engine import CloudEngine
from ..train.bundle import Bundle
from ..wire.messages import AdaptRequest

BATCHES = (1, 2, 4, 8, 16, 32, 64)


def measure(scenario: Scenario, bundle: Bundle, batches=BATCHES, repeats: int = 7) -> list[dict]:
    engine = CloudEngine(scenario, bundle, 0, cloud_id="calibrate")
    rng = np.random.default_rng(scenario.seed)
    rows = []
    for method in (methods.get(m) for m in scenario.methods if methods.get(m).asks_cloud):
        prototypes, steps = method.prototypes(scenario), method.steps(scenario)
        for b in batches if not steps else (1,):       # the cloud fine-tunes one request at a time
            requests = [AdaptRequest(f"dev-{i:06d}", 1, 0, method.name,
                                     tuple(int(x) for x in rng.integers(1, bundle.num_items + 1, scenario.persona.window)))
                        for i in range(b)]
            engine.compute(method.name, requests)                         # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter_ns()
                engine.compute(method.name, requests)                     # the cloud node's own call
                times.append((time.perf_counter_ns() - t0) / 1e6)
            rows.append({"method": method.name, "batch": b, "prototypes": prototypes, "steps": steps,
                         "ms_median": round(float(np.median(times)), 4), "ms_min": round(min(times), 4)})
    return rows


def fit(rows: list[dict]) -> dict:
    """Non-negative least squares over the three coefficients (every subset of them, best fit kept), on the
    editor methods' rows; ``per_step_ms`` from the fine-tuning rows (their time less the fitted base, per step)."""
    tuning = [r for r in rows if r.get("steps")]
    rows = [r for r in rows if not r.get("steps")]
    fitted = _fit_editors(rows) if rows else {"base_ms": 0.0, "per_request_ms": 0.0, "per_prototype_ms": 0.0,
                                              "max_relative_error": 0.0}
    if tuning:
        per_step = [(r["ms_median"] - fitted["base_ms"] - fitted["per_request_ms"]) / r["steps"] for r in tuning]
        fitted["per_step_ms"] = round(max(0.0, float(np.median(per_step))), 4)
        for r in tuning:
            r["ms_fitted"] = round(fitted["base_ms"] + fitted["per_request_ms"] + r["steps"] * fitted["per_step_ms"], 4)
    return fitted


def _fit_editors(rows: list[dict]) -> dict:
    b = np.asarray([r["batch"] for r in rows], dtype=np.float64)
    p = np.asarray([r["prototypes"] for r in rows], dtype=np.float64)
    y = np.asarray([r["ms_median"] for r in rows])
    columns = np.stack([np.ones_like(b), b, b * p], axis=1)
    best = None
    for k in range(1, 4):
        for subset in itertools.combinations(range(3), k):
            coef, *_ = np.linalg.lstsq(columns[:, subset], y, rcond=None)
            if (coef < 0).any():
                continue
            full = np.zeros(3)
            full[list(subset)] = coef
            err = float(np.sum((columns @ full - y) ** 2))
            if best is None or err < best[1]:
                best = (full, err)
    coef = best[0]
    predicted = columns @ coef
    for r, pred in zip(rows, predicted):
        r["ms_fitted"] = round(float(pred), 4)
    return {"base_ms": round(float(coef[0]), 4), "per_request_ms": round(float(coef[1]), 4),
            "per_prototype_ms": round(float(coef[2]), 4),
            "max_relative_error": round(float(np.max(np.abs(predicted - y) / y)), 3)}
