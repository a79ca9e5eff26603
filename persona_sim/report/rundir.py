"""The run directory: scenario.yaml, manifest.json, results.sqlite, summary.json, report.md.

Device-node shards each write ``shard-I-of-N.sqlite``; whichever shard finds
all N present merges them and writes the summary and report, so a run split
over several processes or machines ends with the same files as one.
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

import yaml

from ..data.dataset import Dataset
from ..errors import ScenarioError
from ..scenario.schema import Scenario
from ..train.bundle import training_key
from .html import write_html
from .markdown import render_markdown
from .plots import write_plots
from .results import merge_results, methods_done, read_meta, set_meta
from .summary import build_summary

PACKAGES = ("persona-sim", "torch", "numpy", "simpy", "grpcio", "protobuf", "pydantic")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def check_fresh(out: Path, force: bool, *markers: str) -> None:
    """Refuse to write into a directory that already holds results (one of ``markers``) unless forced."""
    if any((out / m).exists() for m in markers) and not force:
        raise ScenarioError(str(out), [("--out", "this directory already holds results; choose another "
                                                 "--out or pass --force to replace them", str(out))])


def shard_file(out: Path, index: int, count: int) -> Path:
    return out / f"shard-{index}-of-{count}.sqlite"


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def describe(scenario: Scenario, dataset: Dataset, bundle_signature: str, **extra) -> dict:
    """The manifest facts every entry point records."""
    return {
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "users": dataset.num_users,
                    "items": dataset.num_items, "interactions": dataset.num_interactions},
        "bundle": {"signature": bundle_signature, "training_key": training_key(scenario)},
        "compute_mode": scenario.cloud.compute,
        **extra,
    }


def network_label(scenario: Scenario) -> str:
    n = scenario.network
    text = n.profile + (f" (trace {Path(n.trace).name})" if n.trace else "")
    if n.cell:
        text += f", cells of {n.cell.devices} ({n.cell.uplink_mbps:g}/{n.cell.downlink_mbps:g} Mbit/s)"
    return text


def cloud_label(scenario: Scenario) -> str:
    c = scenario.cloud
    links = "/".join("unlimited" if v is None else f"{v:g}" for v in (c.ingress_mbps, c.egress_mbps))
    return f"{c.workers} worker(s), batches of up to {c.max_batch}, ingress/egress {links} Mbit/s"


def prepare(out: Path, scenario: Scenario, facts: dict) -> None:
    """Create the directory and write the resolved scenario and the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario.yaml").write_text(yaml.safe_dump(scenario.resolved(), sort_keys=False))
    manifest = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "created_unix": int(time.time()),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in PACKAGES},
        **facts,
    }
    write_json(out / "manifest.json", manifest)


def write_summary(out: Path, scenario: Scenario, shard_count: int, facts: dict) -> dict:
    """Write summary.json and report.md from results.sqlite."""
    recorded = read_meta(out / "results.sqlite").get("methods_done")
    methods = list(scenario.methods) if recorded is None else recorded   # an incomplete run: what finished
    summary = build_summary(out / "results.sqlite", methods, {
        "scenario": scenario.name, "seed": scenario.seed, "compute_mode": scenario.cloud.compute,
        "network": network_label(scenario), "cloud": cloud_label(scenario),
        "devices": scenario.devices.count, "shards": shard_count, **facts})
    write_json(out / "summary.json", summary)
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {}
    plots = write_plots(summary, scenario, out)
    markdown = render_markdown(summary, manifest, plots)
    (out / "report.md").write_text(markdown)
    write_html(out, markdown, f"persona-sim run: {scenario.name}")
    return summary


def merge_shard_dirs(out: Path, dirs: list[Path]) -> tuple[Scenario, int]:
    """Gather the shard files that device nodes wrote into separate directories (separate machines) into one
    run directory ``out``: the same scenario in every directory, every shard of one count exactly once."""
    from ..scenario.files import load_scenario

    found: dict[int, Path] = {}
    counts, texts = set(), {}
    for d in dirs:
        if not (d / "scenario.yaml").exists():
            raise ScenarioError(str(d), [("SHARD_DIR", "holds no scenario.yaml: not a device node's --out", str(d))])
        texts[d] = (d / "scenario.yaml").read_text()
        for path in sorted(d.glob("shard-*-of-*.sqlite")):
            index, count = (int(x) for x in path.stem.removeprefix("shard-").split("-of-"))
            if index in found:
                raise ScenarioError(str(path), [("SHARD_DIR", f"shard {index}/{count} is also in {found[index].parent}",
                                                 str(path))])
            found[index] = path
            counts.add(count)
    first = dirs[0]
    differ = [d for d in dirs if texts[d] != texts[first]]
    if differ:
        raise ScenarioError(str(differ[0]), [("scenario.yaml", f"differs from {first / 'scenario.yaml'}: the shards "
                                                               "did not run the same scenario", str(differ[0]))])
    if len(counts) != 1:
        raise ScenarioError(str(first), [("SHARD_DIR", "shard files of different shard counts " + str(sorted(counts)),
                                          sorted(counts))])
    count = counts.pop()
    missing = [i for i in range(count) if i not in found]
    if missing:
        raise ScenarioError(str(first), [("SHARD_DIR", f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} "
                                                       "not found in the directories given", [str(d) for d in dirs])])
    out.mkdir(parents=True, exist_ok=True)
    for name in ("scenario.yaml", "manifest.json"):
        if (first / name).exists() and (first / name).resolve() != (out / name).resolve():
            (out / name).write_bytes((first / name).read_bytes())
    merge_results([found[i] for i in range(count)], out / "results.sqlite")
    return load_scenario(out / "scenario.yaml"), count


def completed_methods(out: Path, scenario: Scenario, shard_count: int) -> list[str]:
    """The scenario's methods that every shard's file holds in full (none while a shard file is missing)."""
    shards = [shard_file(out, i, shard_count) for i in range(shard_count)]
    if not all(s.exists() for s in shards):
        return []
    done = [set(methods_done(s) or scenario.methods) for s in shards]
    return [m for m in scenario.methods if all(m in d for d in done)]


def finalize(out: Path, scenario: Scenario, shard_count: int, facts: dict, partial: bool = False) -> dict | None:
    """Once every shard holds every method: merge them into results.sqlite, then write the summary and report.
    ``partial`` (a run that failed): report the methods every shard completed, keeping the shard files so
    ``run --resume`` can go on; the manifest and summary say the run is incomplete."""
    shards = [shard_file(out, i, shard_count) for i in range(shard_count)]
    done = completed_methods(out, scenario, shard_count)
    complete = done == list(scenario.methods)
    if not complete and not (partial and done):
        return None
    merge_results(shards, out / "results.sqlite", consume=complete)
    set_meta(out / "results.sqlite", "methods_done", done)
    if complete:
        for s in shards:
            s.unlink(missing_ok=True)
    _mark_manifest(out, complete, done)
    return write_summary(out, scenario, shard_count, dict(facts, complete=complete))


def _mark_manifest(out: Path, complete: bool, done: list[str]) -> None:
    path = out / "manifest.json"
    if path.exists():
        manifest = json.loads(path.read_text())
        manifest.update(complete=complete, methods_done=done)
        write_json(path, manifest)
