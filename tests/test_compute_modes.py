"""Cloud compute in replay mode, the calibrate command, and device compute profiles."""
from __future__ import annotations

import copy
import json
import sqlite3

import numpy as np
import pytest
import yaml

from persona_sim.cli import main
from persona_sim.errors import ScenarioError
from persona_sim.jobs.calibrate import fit
from persona_sim.scenario.schema import ComputeSpec, parse_scenario
from persona_sim.sim.device_compute import PROFILES, device_compute


def test_fit_recovers_known_coefficients_exactly():
    rows = [{"batch": b, "prototypes": p, "ms_median": 0.3 + b * (0.02 + p * 0.01)}
            for p in (1, 3) for b in (1, 2, 4, 8, 16)]
    result = fit(rows)
    assert (result["base_ms"], result["per_request_ms"], result["per_prototype_ms"]) == (0.3, 0.02, 0.01)
    assert result["max_relative_error"] == 0.0


def test_fit_keeps_coefficients_non_negative():
    rows = [{"batch": b, "prototypes": 1, "ms_median": 1.0 - 0.001 * b} for b in (1, 2, 4, 8)]
    result = fit(rows)
    assert min(result["base_ms"], result["per_request_ms"], result["per_prototype_ms"]) >= 0


def test_calibrate_command_measures_every_method_and_batch(tiny_file, tmp_path, capsys, tiny_world):
    out = tmp_path / "calib.json"
    assert main(["calibrate", str(tiny_file), "--repeats", "1", "--out", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert {(r["method"], r["batch"]) for r in data["measurements"]} == {
        (m, b) for m in ("persona-s", "persona-m") for b in (1, 2, 4, 8, 16, 32, 64)}
    assert all(r["ms_median"] > 0 for r in data["measurements"])
    assert "cloud: {compute: model, base_ms:" in capsys.readouterr().out


def test_replay_charges_the_logged_times(tiny_dict, tmp_path, tiny_world):
    logged = tmp_path / "logged"
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(tiny_dict))
    assert main(["run", str(tmp_path / "a.yaml"), "--out", str(logged), "--transport", "inproc", "--quiet"]) == 0
    replay = copy.deepcopy(tiny_dict)
    replay["cloud"].update(compute="replay", replay=str(logged))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(replay))
    runs = [tmp_path / "r1", tmp_path / "r2"]
    for run in runs:
        assert main(["run", str(tmp_path / "b.yaml"), "--out", str(run), "--transport", "inproc", "--quiet"]) == 0
    digests = {json.loads((r / "summary.json").read_text())["results_digest"] for r in runs}
    assert len(digests) == 1                                  # deterministic for one log
    times = dict(((m, d, s), ns) for m, d, s, ns in sqlite3.connect(logged / "results.sqlite").execute(
        "SELECT method, device_id, seq, cloud_compute_ns FROM wall"))
    con = sqlite3.connect(runs[0] / "results.sqlite")
    batches = con.execute("SELECT method, compute_start_us, compute_end_us, GROUP_CONCAT(device_id || ':' || seq) "
                          "FROM adaptations WHERE status='ok' GROUP BY method, compute_start_us").fetchall()
    checked = 0
    for method, start, end, members in batches:
        keys = [(method, m.split(":")[0], int(m.split(":")[1])) for m in members.split(",")]
        if all(k in times for k in keys):
            assert end - start == 400_000 + sum(times[k] for k in keys) // 1000     # base_ms + logged
            checked += 1
    assert checked > 5


def test_replay_without_a_logged_run_names_the_key(tiny_dict, tmp_path):
    bad = copy.deepcopy(tiny_dict)
    bad["cloud"].update(compute="replay", replay=str(tmp_path / "nowhere"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(bad))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"), "--transport", "inproc",
                 "--quiet"]) == 2
    with pytest.raises(ScenarioError, match="needs `replay: RUN_DIR`"):
        parse_scenario({**tiny_dict, "cloud": {"compute": "replay"}})


def test_device_compute_profiles_are_per_device_and_reproducible():
    fixed = device_compute(ComputeSpec(apply_ms=2.5, infer_ms=4, finetune_step_ms=30), 1, 0)
    assert (fixed.apply_us, fixed.infer_us, fixed.finetune_step_us) == (2500, 4000, 30000)
    spec = ComputeSpec(profile="lowend")
    drawn = [device_compute(spec, 7, i) for i in range(400)]
    assert drawn[3] == device_compute(spec, 7, 3) != device_compute(spec, 8, 3)
    assert len({d.apply_us for d in drawn}) > 300
    median_ms = np.median([d.finetune_step_us for d in drawn]) / 1000
    assert abs(median_ms / PROFILES["lowend"][2] - 1) < 0.1
