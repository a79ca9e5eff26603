"""Shared tiny fixtures: a scenario small enough to train in about a second."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from persona_sim.scenario.schema import parse_scenario

TINY = {
    "name": "tiny",
    "seed": 3,
    "dataset": {"name": "synthetic", "synthetic": {"users": 300, "items": 60, "categories": 4,
                                                   "min_len": 8, "max_len": 14}},
    "split": {"device_users": 12, "context": 3},
    "model": {"hidden": 8, "blocks": 1, "heads": 1, "max_len": 16},
    "train": {"epochs": 2, "batch_size": 64, "editor_epochs": 2, "sampled_negatives": 16},
    "persona": {"window": 4, "editor_hidden": 16, "prototypes": 2},
    "methods": ["static", "persona-s", "persona-m"],
    "devices": {"count": 12, "arrivals": {"mean_s": 10}, "policy": {"every": 2}},
    "network": {"delay_ms": 5, "jitter_ms": 2, "loss": 0.05,
                "cell": {"devices": 4, "uplink_mbps": 0.05, "downlink_mbps": 5}},
    "cloud": {"base_ms": 400, "per_request_ms": 50, "max_batch": 2, "ingress_mbps": 0.2, "egress_mbps": 2},
    "eval": {"negatives": 20},
    "drift": [{"kind": "takeover", "at_s": 30, "fraction": 0.25}, {"kind": "category", "at_s": 30, "fraction": 0.25},
              {"kind": "periodic", "at_s": 20, "fraction": 0.25, "period_s": 25}],
}


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test shares one fresh bundle cache, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("PERSONA_SIM_CACHE")
    os.environ["PERSONA_SIM_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("PERSONA_SIM_CACHE", None)
    else:
        os.environ["PERSONA_SIM_CACHE"] = old


@pytest.fixture
def tiny_dict():
    return copy.deepcopy(TINY)


@pytest.fixture(scope="session")
def tiny_scenario():
    return parse_scenario(copy.deepcopy(TINY), "tiny")


@pytest.fixture
def tiny_file(tmp_path, tiny_dict) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    return path


@pytest.fixture(scope="session")
def tiny_world(tiny_scenario):
    """(scenario, dataset, split, bundle path, bundle) trained once per session."""
    from persona_sim.data.dataset import load_dataset
    from persona_sim.data.split import split_users
    from persona_sim.train.bundle import ensure_bundle, load_bundle

    dataset = load_dataset(tiny_scenario.dataset, tiny_scenario.seed)
    split = split_users(dataset, tiny_scenario)
    path, _ = ensure_bundle(tiny_scenario, dataset, lambda *a: None)
    return tiny_scenario, dataset, split, path, load_bundle(path)


@pytest.fixture(scope="session")
def grpc_run(tmp_path_factory, _isolated_cache):
    """TINY run once by ``persona-sim run`` over real gRPC: (scenario file, run directory, the process)."""
    root = tmp_path_factory.mktemp("grpc")
    scenario = root / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(TINY))
    out = root / "run"
    proc = subprocess.run([sys.executable, "-m", "persona_sim.cli", "run", str(scenario), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return scenario, out, proc
