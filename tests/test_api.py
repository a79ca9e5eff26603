"""The Python API drives a run without the CLI and reads run directories back."""
from __future__ import annotations

import json

import pytest

import persona_sim
from persona_sim.errors import ScenarioError
from tests.test_end_to_end import metrics_only, summary


def test_run_from_plain_data_matches_the_cli_over_grpc(grpc_run, tiny_dict, tmp_path):
    _, cli_out, _ = grpc_run
    result = persona_sim.run(tiny_dict, out=tmp_path / "api")
    assert metrics_only(result) == metrics_only(summary(cli_out))
    run = persona_sim.load_run(tmp_path / "api")
    assert run.digest == result["results_digest"] and run.verify()
    assert run.scenario.name == "tiny" and run.manifest["seed"] == tiny_dict["seed"]
    rows = run.rows("adaptations")
    assert len(rows) == sum(m["adaptations"] for m in result["methods"].values())
    assert {"method", "device_id", "applied_us"} <= set(rows[0])


def test_run_takes_files_overrides_and_refuses_to_overwrite(tiny_file, tmp_path):
    out = tmp_path / "o"
    s = persona_sim.run(tiny_file, out=out, seed=4, overrides={"methods": ["static"]})
    assert list(s["methods"]) == ["static"] and s["seed"] == 4
    with pytest.raises(ScenarioError, match="already holds results"):
        persona_sim.run(tiny_file, out=out)
    with pytest.raises(ScenarioError, match="methods"):
        persona_sim.run(tiny_file, out=tmp_path / "bad", overrides={"methods": ["persona-x"]})


def test_load_run_names_what_is_missing(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({}))
    with pytest.raises(ScenarioError, match="results.sqlite"):
        persona_sim.load_run(tmp_path)


def test_rows_names_the_tables_it_has(grpc_run):
    with pytest.raises(ValueError, match="predictions"):
        persona_sim.load_run(grpc_run[1]).rows("nope")
