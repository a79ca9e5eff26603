"""`persona-sim bench sim`: how fast the simulator itself runs, at growing numbers of devices.

Each measurement is a fresh ``persona-sim run`` process (its cloud and device nodes too, over
gRPC), timed from start to exit, with the peak resident memory of its whole process tree sampled
from /proc (Linux). Sizes are scaled from a synthetic scenario: N devices replay N held-out users,
and the dataset grows by N users so the trained part stays the same size. A warm-up run per size
trains and caches its model bundle first, so the timed runs measure simulation, not training.
Repeats are interleaved (size by size, transport by transport, then again), so a noisy neighbour
spreads over every cell instead of spoiling one; medians are reported.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import ScenarioError
from ..scenario.files import load_scenario

POLL_S = 0.2


def _tree_memory_kb(root: int) -> tuple[int, int]:
    """(RSS, PSS) of ``root`` and all its descendants, from /proc (0 where it cannot be read). The RSS sum counts
    a page shared by several processes (a forked child's, its parent's) once for each; PSS splits it among
    them, so its sum is the tree's physical memory."""
    parents, rss = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
        rss[int(entry.name)] = next((int(line.split()[1]) for line in status.splitlines()
                                     if line.startswith("VmRSS:")), 0)
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(pid, 0) for pid in tree), sum(_pss_kb(pid) for pid in tree)


def _pss_kb(pid: int) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)


def _measure(cmd: list[str], env: dict, cwd: Path | None) -> tuple[float, int, int, int, str]:
    """(wall s, peak tree RSS KB, peak tree PSS KB, exit code, the output's tail) of one process tree."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, done = [0, 0], threading.Event()

    def sample():
        while not done.wait(POLL_S):
            rss, pss = _tree_memory_kb(proc.pid)
            peak[:] = max(peak[0], rss), max(peak[1], pss)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    return wall, peak[0], peak[1], proc.returncode, out[-2000:]


def scaled_settings(scenario_file: Path, devices: int, overrides: dict) -> dict:
    """``overrides`` plus the keys that scale a synthetic scenario to ``devices`` devices: as many held-out
    users, and the dataset grown by as many, so the trained part keeps its size."""
    base = load_scenario(scenario_file, overrides)
    if base.dataset.name != "synthetic":
        raise ScenarioError(str(scenario_file), [("dataset.name", "only a synthetic scenario can be scaled to "
                                                  f"{devices:,} devices", base.dataset.name)])
    trained_users = base.dataset.synthetic.users - base.split.device_users
    return {**overrides, "devices.count": devices, "split.device_users": devices,
            "dataset.synthetic.users": devices + trained_users}


def set_args(settings: dict) -> list[str]:
    return [a for k, v in settings.items() for a in ("--set", f"{k}={json.dumps(v)}")]


def _scaled(scenario_file: Path, devices: int, overrides: dict) -> list[str]:
    return set_args(scaled_settings(scenario_file, devices, overrides))


def bench_sim(scenario_file: Path, sizes: list[int], transports: list[str], repeats: int, overrides: dict,
              code: Path | None = None, warmup: bool = True,
              progress: Callable[[str], None] = lambda line: None) -> dict:
    env, cwd = dict(os.environ, PYTHONUNBUFFERED="1"), None
    if code is not None:                      # another checkout's code, for before/after comparisons; `-m` puts
        env["PYTHONPATH"] = str(code.resolve())   # the working directory first on sys.path, so run from there
        cwd = code.resolve()
    python = [sys.executable, "-m", "persona_sim.cli", "run", str(scenario_file.resolve()), "--quiet", "--force"]
    cells: dict[tuple[int, str], list[dict]] = {(n, t): [] for n in sizes for t in transports}
    with tempfile.TemporaryDirectory(prefix="persona-bench-") as tmp:
        for n in sizes if warmup else []:
            progress(f"warm-up: {n:,} devices (trains and caches the model bundle)")
            wall, _, _, rc, tail = _measure(python + _scaled(scenario_file, n, overrides) +
                                         ["--transport", "inproc", "--out", f"{tmp}/warm-{n}"], env, cwd)
            if rc:
                raise RuntimeError(f"warm-up run of {n} devices failed (exit {rc}):\n{tail}")
        for r in range(repeats):
            for n in sizes:
                for t in transports:
                    out = Path(tmp, f"{n}-{t}-{r}")
                    wall, rss_kb, pss_kb, rc, tail = _measure(python + _scaled(scenario_file, n, overrides) +
                                                      ["--transport", t, "--out", str(out)], env, cwd)
                    if rc:
                        raise RuntimeError(f"run of {n} devices over {t} failed (exit {rc}):\n{tail}")
                    summary = json.loads((out / "summary.json").read_text())
                    adaptations = sum(m.get("adaptations", 0) for m in summary["methods"].values())
                    rounds = summary["wall_clock"]["rounds"]["count"]
                    cells[(n, t)].append({"wall_s": round(wall, 2), "peak_rss_mb": round(rss_kb / 1024, 1),
                                          "peak_pss_mb": round(pss_kb / 1024, 1),
                                          "adaptations": adaptations, "rounds": rounds,
                                          "digest": summary["results_digest"]})
                    progress(f"repeat {r + 1}/{repeats}: {n:,} devices {t}: {wall:.1f} s, "
                             f"RSS {rss_kb / 1024:.0f} MB (PSS {pss_kb / 1024:.0f} MB), {adaptations:,} adaptations, "
                             f"{rounds:,} rounds")
    rows = []
    for (n, t), runs in cells.items():
        wall = statistics.median(x["wall_s"] for x in runs)
        a, rounds = runs[0]["adaptations"], runs[0]["rounds"]
        rows.append({"devices": n, "transport": t, "runs": runs, "wall_s_median": wall,
                     "peak_rss_mb_max": max(x["peak_rss_mb"] for x in runs),
                     "peak_pss_mb_max": max(x["peak_pss_mb"] for x in runs), "adaptations": a,
                     "adaptations_per_wall_s": round(a / wall, 1) if wall else None,
                     "rounds": rounds, "rounds_per_adaptation": round(rounds / a, 3) if a else None,
                     "same_digest": len({x["digest"] for x in runs}) == 1})
    return {"scenario": str(scenario_file), "overrides": overrides, "repeats": repeats, "code": str(code or ""),
            "cpus": os.cpu_count(), "rows": rows}


def render(result: dict) -> str:
    lines = ["devices  transport   wall s (median)  peak RSS MB  peak PSS MB  adaptations  adapt/wall s  rounds/adapt",
             "-" * 105]
    for r in result["rows"]:
        lines.append(f"{r['devices']:>7,}  {r['transport']:<9} {r['wall_s_median']:>16.1f}  {r['peak_rss_mb_max']:>11.0f}"
                     f"  {r['peak_pss_mb_max']:>11.0f}"
                     f"  {r['adaptations']:>11,}  {r['adaptations_per_wall_s'] or 0:>12,.0f}  "
                     f"{r['rounds_per_adaptation'] or 0:>12.3f}")
    by = {(r["devices"], r["transport"]): r["wall_s_median"] for r in result["rows"]}
    for n in sorted({r["devices"] for r in result["rows"]}):
        if (n, "grpc") in by and (n, "inproc") in by and by[(n, "inproc")]:
            lines.append(f"{n:,} devices: grpc / inproc = {by[(n, 'grpc')] / by[(n, 'inproc')]:.2f}")
    for n in sorted({r["devices"] for r in result["rows"]}):
        cells = [r for r in result["rows"] if r["devices"] == n]
        same = all(r["same_digest"] for r in cells) and len({r["runs"][0]["digest"] for r in cells}) == 1
        lines.append(f"{n:,} devices: {'one results digest in every run' if same else 'RESULTS DIFFER between runs'}")
    return "\n".join(lines)
