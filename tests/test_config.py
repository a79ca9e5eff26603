"""Scenario validation names the file, the key path and the bad value."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from persona_sim.cli import main
from persona_sim.errors import ScenarioError
from persona_sim.scenario.files import load_scenario, load_variants
from persona_sim.scenario.schema import parse_scenario
from persona_sim.train.bundle import training_key

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))


def test_misspelled_key_is_an_error_with_a_suggestion(tmp_path, tiny_dict):
    tiny_dict["devices"]["cuont"] = tiny_dict["devices"].pop("count")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    text = str(err.value)
    assert str(path) in text
    assert "devices.cuont: unknown key; did you mean 'count'?" in text


def test_bad_value_is_shown(tiny_dict):
    tiny_dict["network"]["uplink_mbps"] = -3
    with pytest.raises(ScenarioError, match=r"network\.uplink_mbps: Input should be greater than 0 \(got -3\)"):
        parse_scenario(tiny_dict, "x.yaml")


def test_unknown_method_is_named(tiny_dict):
    tiny_dict["methods"] = ["static", "persona-x"]
    with pytest.raises(ScenarioError, match=r"methods\.1: .*\(got 'persona-x'\)"):
        parse_scenario(tiny_dict, "x.yaml")


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndevices: {count: 3\n")
    with pytest.raises(ScenarioError, match=r"not valid YAML: line \d+"):
        load_scenario(path)


def test_more_devices_than_held_out_users_is_refused(tiny_dict):
    tiny_dict["devices"]["count"] = 50
    with pytest.raises(ScenarioError, match=r"devices\.count \(50\) exceeds split\.device_users \(12\)"):
        parse_scenario(tiny_dict, "x.yaml")


def test_relative_dataset_path_resolves_against_the_scenario_file(tmp_path, tiny_dict):
    tiny_dict["dataset"] = {"name": "beauty", "path": "data/beauty"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(tiny_dict))
    assert load_scenario(tmp_path / "s.yaml").dataset.path == str(tmp_path / "data" / "beauty")


def test_training_key_ignores_runtime_settings_but_not_model_settings(tiny_dict):
    base = parse_scenario(tiny_dict)
    tiny_dict["network"]["delay_ms"] = 50
    assert training_key(parse_scenario(tiny_dict)) == training_key(base)
    tiny_dict["persona"]["clip"] = 0.5
    assert training_key(parse_scenario(tiny_dict)) != training_key(base)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_shipped_scenario_is_valid(path):
    assert all(v.scenario.name for v in load_variants(path))


def test_validate_command_exits_nonzero_naming_the_key(tmp_path, tiny_dict, capsys):
    tiny_dict["netwrok"] = tiny_dict.pop("network")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    assert main(["validate", str(path)]) == 2
    assert "netwrok: unknown key; did you mean 'network'?" in capsys.readouterr().err


def test_validate_command_accepts_a_good_file(tiny_file, capsys):
    assert main(["validate", str(tiny_file)]) == 0
    assert "ok" in capsys.readouterr().out


def test_missing_dataset_says_where_it_looked(tmp_path, tiny_dict, capsys, monkeypatch):
    monkeypatch.delenv("PERSONA_SIM_DATA", raising=False)
    tiny_dict["dataset"] = {"name": "amazon-beauty", "path": str(tmp_path / "nowhere")}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    assert main(["validate", str(path)]) == 3
    err = capsys.readouterr().err
    assert "dataset 'amazon-beauty' not found" in err and str(tmp_path / "nowhere") in err


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_resolved_scenarios_read_back_identically(path):
    """A run directory's scenario.yaml (every default filled in) is what node processes load."""
    from persona_sim.scenario.files import load_variants
    from persona_sim.scenario.schema import parse_scenario

    for v in load_variants(path):
        assert parse_scenario(yaml.safe_load(yaml.safe_dump(v.scenario.resolved())), "resolved") == v.scenario


def test_progress_is_plain_lines_without_a_terminal():
    import io

    from persona_sim.progress import stage_progress

    out = io.StringIO()
    update = stage_progress(stream=out)
    for done in range(0, 101):
        update("persona-s", done, 100)
    update("prototype", 0, 8)
    update("prototype", 8, 8)
    lines = out.getvalue().splitlines()
    assert lines == ["persona-s: 0/100 events", "persona-s: 25/100 events", "persona-s: 50/100 events",
                     "persona-s: 75/100 events", "persona-s: 100/100 events done",
                     "prototype: 0/8 epochs", "prototype: 8/8 epochs done"]
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_version_and_log_options(capsys, tmp_path, tiny_file):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("persona-sim ")
    log = tmp_path / "log.txt"
    assert main(["validate", str(tiny_file), "--log-level", "debug", "--log-file", str(log)]) == 0
    assert main(["--log-level", "error", "validate", str(tiny_file)]) == 0
