"""`persona-sim eval`: the offline protocol end to end on tiny synthetic data, sweeps, extends, --set."""
from __future__ import annotations

import copy
import json

import pytest
import yaml

from persona_sim.cli import main
from persona_sim.errors import ScenarioError
from persona_sim.scenario.files import load_scenario, load_variants
from tests.conftest import TINY


@pytest.fixture
def tiny_m(tmp_path):
    data = copy.deepcopy(TINY)
    data.update(methods=["static", "persona-s", "persona-m", "group-finetune"],
                persona={**data["persona"], "prototypes": 2})
    path = tmp_path / "tiny_m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_eval_writes_the_paper_table_with_mean_and_std(tiny_m, tmp_path):
    out = tmp_path / "ev"
    assert main(["eval", str(tiny_m), "--seeds", "2", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "leave-one-out" and summary["seeds"] == [3, 4]
    methods = summary["methods"]
    assert list(methods) == ["static", "persona-s", "persona-m", "group-finetune"]
    for m in methods.values():
        assert 0.0 <= m["ndcg@5"] <= m["ndcg@10"] <= 1.0 and 0.0 <= m["auc"] <= 1.0
        assert m["std"]["auc"] >= 0.0 and m["cases"] == 300
    per_seed = summary["variants"][0]["per_seed"]
    assert [r["seed"] for r in per_seed] == [3, 4] and per_seed[0]["bundle"] != per_seed[1]["bundle"]
    mean = (per_seed[0]["methods"]["persona-m"]["auc"] + per_seed[1]["methods"]["persona-m"]["auc"]) / 2
    assert methods["persona-m"]["auc"] == pytest.approx(mean, abs=1e-6)
    report = (out / "report.md").read_text()
    assert "| Persona (m) |" in report and "±" in report and "NDCG@5" in report
    kept = [r["groups"] for r in per_seed]                  # Persona (m)'s groups: chosen on validation per seed
    assert set(kept) <= {"paper", "authors"} and f"`persona.groups` kept on validation, per seed: {kept[0]}, {kept[1]}" in report
    # Same scenario, same seeds: identical figures (the bundles come from the cache, the negatives from the seed).
    again = tmp_path / "ev2"
    assert main(["eval", str(tiny_m), "--seeds", "2", "--out", str(again), "--quiet"]) == 0
    def simulated(ms):   # wall-clock timings aside
        return {name: {k: v for k, v in m.items() if k != "ms_per_case"} for name, m in ms.items()}
    assert simulated(json.loads((again / "summary.json").read_text())["methods"]) == simulated(methods)


def test_sweep_with_extends_expands_and_plots(tiny_m, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"extends": "tiny_m.yaml", "name": "clip-sweep",
                                     "sweep": {"persona.clip": [0.1, 1.0]}}))
    variants = load_variants(sweep)
    assert [v.label for v in variants] == ["persona.clip=0.1", "persona.clip=1.0"]
    assert variants[0].scenario.persona.clip == 0.1 and variants[0].scenario.persona.prototypes == 2
    out = tmp_path / "ev"
    assert main(["eval", str(sweep), "--out", str(out), "--quiet", "--set", "methods=[static, persona-s]"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [v["settings"] for v in summary["variants"]] == [{"persona.clip": 0.1}, {"persona.clip": 1.0}]
    assert summary["plots"] == ["gain-map.png", "sweep-persona-clip.png"]
    for plot in summary["plots"]:
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Verdict" in (out / "report.md").read_text() and set(summary["variants"][0]["verdict"]) == {"persona-s"}
    assert main(["report", str(out)]) == 0
    # `run` takes one scenario: a sweep is refused with a message that says what to do.
    with pytest.raises(ScenarioError, match="fix each swept key with --set"):
        load_scenario(sweep)
    assert load_scenario(sweep, {"persona.clip": 0.5}).persona.clip == 0.5


def test_sweep_and_set_errors_name_the_key_and_value(tiny_m, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"extends": "tiny_m.yaml", "sweep": {"persona.clip": [1.0, -2]}}))
    assert main(["eval", str(bad), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "sweep variant persona.clip=-2" in err and "persona.clip" in err and "-2" in err
    assert main(["eval", str(tiny_m), "--set", "persona.clpi=1", "--quiet", "--out", str(tmp_path / "y")]) == 2
    assert "did you mean 'clip'" in capsys.readouterr().err
    assert main(["eval", str(tiny_m), "--set", "novalue", "--quiet"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
