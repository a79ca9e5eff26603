"""The Python API: drive a run from a notebook or a script without the CLI.

    import persona_sim
    summary = persona_sim.run("scenarios/quickstart.yaml", out="runs/q", overrides={"devices.count": 50})
    run = persona_sim.load_run("runs/q")
    run.summary["methods"]["persona-s"]["ndcg@10"]
    run.rows("adaptations")[:3]          # results.sqlite rows as dicts; run.frame("predictions"): pandas

``run`` is ``persona-sim run`` for one scenario (a file, plain data as read
from YAML, or a ``Scenario``); it raises the same typed errors the CLI reports
(``persona_sim.errors``) and never prints unless given a progress callback.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ScenarioError
from .jobs.runner import run as run_job
from .progress import Callback
from .report.results import results_digest
from .report.rundir import check_fresh
from .report.tables import read_table
from .scenario.files import load_scenario, set_key
from .scenario.schema import Scenario, parse_scenario


def _scenario(scenario: str | Path | dict | Scenario, overrides: dict[str, Any]) -> Scenario:
    if isinstance(scenario, Scenario):
        return parse_scenario(_with(scenario.resolved(), overrides), f"<Scenario {scenario.name}>")
    if isinstance(scenario, dict):
        return parse_scenario(_with(scenario, overrides), "<scenario dict>")
    return load_scenario(scenario, overrides)       # a sweep must have its swept keys fixed by overrides


def _with(data: dict, overrides: dict[str, Any]) -> dict:
    for key, value in overrides.items():
        data = set_key(data, key, value)
    return data


def run(scenario: str | Path | dict | Scenario, out: str | Path, *, seed: int | None = None,
        overrides: dict[str, Any] | None = None, transport: str = "inproc", shards: int = 1,
        force: bool = False, progress: Callback | None = None) -> dict:
    """Run one scenario into ``out`` and return its summary (what summary.json holds).

    ``overrides`` are dotted keys like ``--set`` (``{"devices.count": 50}``); ``transport`` is
    ``inproc`` (one process, the default here) or ``grpc`` (a cloud and device-node processes);
    both give the same ``results_digest``.
    """
    if transport not in ("inproc", "grpc"):
        raise ScenarioError("transport", [("transport", "must be 'inproc' or 'grpc'", transport)])
    if shards < 1:
        raise ScenarioError("shards", [("shards", "must be at least 1", shards)])
    overrides = dict(overrides or {}, **({"seed": seed} if seed is not None else {}))
    resolved = _scenario(scenario, overrides)
    out = Path(out)
    check_fresh(out, force, "results.sqlite", "summary.json")
    return run_job(resolved, out, transport, shards, quiet=progress is None,
                   progress=progress or (lambda stage, done, total: None))


@dataclass(frozen=True)
class Run:
    """A finished run directory, read back."""

    path: Path
    scenario: Scenario
    summary: dict
    manifest: dict

    @property
    def digest(self) -> str:
        return self.summary["results_digest"]

    def rows(self, table: str) -> list[dict]:
        """Every row of a results.sqlite table (predictions, adaptations, shifts, wall, rounds, meta) as dicts."""
        columns, rows = read_table(self.path / "results.sqlite", table)
        return [dict(zip(columns, r)) for r in rows]

    def frame(self, table: str):
        """A results.sqlite table as a pandas DataFrame (pandas is an extra: pip install 'persona-sim[export]')."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Run.frame needs pandas: pip install 'persona-sim[export]'") from None
        columns, rows = read_table(self.path / "results.sqlite", table)
        return pd.DataFrame.from_records(rows, columns=columns)

    def verify(self) -> bool:
        """Whether results.sqlite still hashes to the digest its summary recorded."""
        return results_digest(self.path / "results.sqlite") == self.digest


def load_run(path: str | Path) -> Run:
    """Read a run directory written by ``run`` or ``persona-sim run``."""
    path = Path(path)
    missing = [n for n in ("scenario.yaml", "summary.json", "results.sqlite") if not (path / n).exists()]
    if missing:
        raise ScenarioError(str(path), [("run directory", f"is not a finished run: missing {', '.join(missing)}",
                                         str(path))])
    scenario = parse_scenario(yaml.safe_load((path / "scenario.yaml").read_text()), str(path / "scenario.yaml"))
    manifest = json.loads((path / "manifest.json").read_text()) if (path / "manifest.json").exists() else {}
    return Run(path, scenario, json.loads((path / "summary.json").read_text()), manifest)
