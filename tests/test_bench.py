"""`persona-sim bench sim` at tiny scale, and the streaming results writer it relies on."""
from __future__ import annotations

import os
import time

from persona_sim.jobs.bench_sim import _tree_memory_kb, bench_sim, render
from persona_sim.report.results import ResultsWriter, merge_results, read_meta, results_digest


def test_tree_memory_counts_this_process_and_a_forked_childs_shared_pages_once():
    rss, pss = _tree_memory_kb(os.getpid())
    assert rss > 10_000 and 0 < pss <= rss
    ballast = bytearray(64 << 20)                  # touched: resident, and shared with the child below
    ballast[::4096] = b"x" * len(ballast[::4096])
    pid = os.fork()
    if pid == 0:
        time.sleep(2)
        os._exit(0)
    try:
        time.sleep(0.3)
        rss2, pss2 = _tree_memory_kb(os.getpid())
        assert rss2 - rss > 100_000                # the RSS sum counts the 64 MiB in both processes
        assert pss2 - pss < 90_000                 # PSS: once
    finally:
        os.waitpid(pid, 0)


def test_bench_sim_measures_fresh_runs_and_reports_medians(tiny_file, tmp_path):
    result = bench_sim(tiny_file, [6], ["inproc"], 2, {"methods": ["static", "persona-s"]})
    (row,) = result["rows"]
    assert row["devices"] == 6 and len(row["runs"]) == 2 and row["same_digest"]
    assert row["adaptations"] > 0 and 0 < row["rounds_per_adaptation"] and row["peak_rss_mb_max"] > 50
    assert row["wall_s_median"] == sorted(r["wall_s"] for r in row["runs"])[0] + (
        abs(row["runs"][0]["wall_s"] - row["runs"][1]["wall_s"]) / 2)
    assert "6  inproc" in render(result).replace(",", "")


def test_results_writer_keeps_only_whole_methods(tmp_path):
    path = tmp_path / "shard.sqlite"
    row = ("a", "dev-000000", 0, 0, 1, 0, 0, 1.0, 1.0, 1.0, 1.0, 1.0)
    w = ResultsWriter(path, {"shard": [0, 1]}, [("dev-000000", 0, "category", 3, 10, "{}")])
    w.append("predictions", [row])
    w.method_done("a")
    w.append("predictions", [("b",) + row[1:]])       # method b is cut short: never marked done
    w.close()
    assert read_meta(path)["methods_done"] == ["a"]
    again = ResultsWriter(path, {"shard": [0, 1]}, [("dev-000000", 0, "category", 3, 10, "{}")], keep=True)
    assert again.done == ["a"]
    assert again.con.execute("SELECT method FROM predictions").fetchall() == [("a",)]
    assert again.con.execute("SELECT count(*) FROM shifts").fetchone() == (1,)
    again.close()


def test_a_lone_shard_file_consumed_is_the_merged_file_without_its_shard_key(tmp_path):
    rows = [("a", f"dev-{d:06d}", e, e * 10, 1, 0, 0, 1.0, 1.0, 0.5, 0.5, 1.0) for d in (2, 0, 1) for e in range(3)]
    for name in ("copied", "moved"):
        w = ResultsWriter(tmp_path / f"{name}-shard.sqlite", {"shard": [0, 1]}, [("dev-000000", 0, "category", 1, 10, "{}")])
        w.append("predictions", rows)
        w.method_done("a")
        w.close()
    merge_results([tmp_path / "copied-shard.sqlite"], tmp_path / "copied.sqlite")
    merge_results([tmp_path / "moved-shard.sqlite"], tmp_path / "moved.sqlite", consume=True)
    assert (tmp_path / "copied-shard.sqlite").exists() and not (tmp_path / "moved-shard.sqlite").exists()
    assert results_digest(tmp_path / "moved.sqlite") == results_digest(tmp_path / "copied.sqlite")
    assert read_meta(tmp_path / "moved.sqlite") == read_meta(tmp_path / "copied.sqlite") == {"methods_done": ["a"]}


def test_bench_cloud_drives_a_real_cloud_node_beside_an_echo_and_the_editor_alone(tiny_file, tmp_path, capsys):
    import json

    from persona_sim.cli import main

    assert main(["bench", "cloud", str(tiny_file), "--k", "1", "16", "--seconds", "0.3", "--repeats", "1",
                 "--out", str(tmp_path), "--quiet"]) == 0
    (path,) = tmp_path.glob("bench-cloud-*.json")
    rows = {r["k"]: r for r in json.loads(path.read_text())["rows"]}
    assert set(rows) == {1, 16}                      # 16 > the scenario's 12 devices: scaled to 16 devices
    for k, r in rows.items():
        assert r["cloud"]["rounds"] > 0 and r["echo"]["rounds"] > 0 and r["editor_alone"]["rounds"] > 0
        assert abs(r["cloud"]["adaptations_per_s"] - r["cloud"]["rounds_per_s"] * k) <= 0.1 * k
        assert 0 < r["cloud"]["latency_ms_p50"] <= r["cloud"]["latency_ms_p99"]
        assert 0 < r["cloud_vs_editor"] and 0 < r["cloud_vs_echo_rounds"]
        assert r["cloud"]["load_cpu_ms_per_round"] > 0 and r["cloud"]["cloud_cpu_ms_per_round"] > 0   # Linux
        cpu_us = (r["cloud"]["load_cpu_ms_per_round"] + r["cloud"]["cloud_cpu_ms_per_round"]) * 1e3 / k
        assert abs(r["cloud"]["cpu_us_per_adaptation"] - cpu_us) <= 0.02 * cpu_us      # one repeat: its own medians
        # the cores cannot serve more than they have CPU for (CPU time is read in 10 ms ticks: some slack)
        assert r["cpu_ceiling_adaptations_per_s"] > 0 and 0 < r["cloud_vs_cpu_ceiling"] <= 1.15
    assert "cloud/editor" in capsys.readouterr().out
