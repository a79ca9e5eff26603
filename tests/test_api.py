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


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trips_every_table(grpc_run, tmp_path, fmt, capsys):
    import sqlite3

    import pandas as pd

    from persona_sim.cli import main

    run_dir = grpc_run[1]
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
    con = sqlite3.connect(run_dir / "results.sqlite")
    tables = [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert {"predictions", "adaptations", "shifts", "wall", "rounds", "meta"} <= set(tables)
    run = persona_sim.load_run(run_dir)
    for table in tables:
        expected = pd.read_sql_query(f"SELECT * FROM {table}", con)
        path = tmp_path / fmt / f"{table}.{fmt}"
        got = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
        assert len(got) == len(expected) and list(got.columns) == list(expected.columns), table
        assert len(run.frame(table)) == len(expected)
    con.close()
    assert f"predictions.{fmt}: " in capsys.readouterr().out


def test_export_names_a_missing_run(tmp_path, capsys):
    from persona_sim.cli import main

    assert main(["export", str(tmp_path)]) == 2 and "no results.sqlite" in capsys.readouterr().err
