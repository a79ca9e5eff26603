"""Training options that reproduce the authors' base as coded (BCE on sampled negatives), at tiny scale."""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
import yaml

from persona_sim.cli import main
from persona_sim.scenario.schema import TrainSpec
from persona_sim.train.training import sampled_loss


def test_bce_is_the_mean_over_the_positive_and_its_own_negatives():
    item_emb = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    u, pos = torch.randn(2, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([2, 5])
    spec = TrainSpec(loss="bce", sampled_negatives=2)
    loss = sampled_loss(u, pos, item_emb, spec, torch.Generator().manual_seed(9))
    neg = torch.randint(1, 7, (2, 2), generator=torch.Generator().manual_seed(9))      # the same draws
    terms = [-F.logsigmoid(u[i] @ item_emb[pos[i]]) for i in range(2)]
    terms += [-F.logsigmoid(-(u[i] @ item_emb[neg[i, j]])) for i in range(2) for j in range(2)]
    assert torch.allclose(loss, torch.stack(terms).sum() / 6)
    ce = sampled_loss(u, pos, item_emb, TrainSpec(sampled_negatives=2), torch.Generator().manual_seed(9))
    assert not torch.allclose(ce, loss)


def test_authors_style_base_trains_and_evaluates_under_both_protocols(tiny_dict, tmp_path):
    tiny_dict["model"] = {"hidden": 8, "blocks": 1, "heads": 4, "max_len": 4, "dropout": 0.0}
    tiny_dict["train"] = {**tiny_dict["train"], "loss": "bce", "sampled_negatives": 1, "batch_size": 256}
    for protocol in ("leave-one-out", "realtime"):
        tiny_dict["eval"] = {"negatives": 20, "protocol": protocol}
        path = tmp_path / f"{protocol}.yaml"
        path.write_text(yaml.safe_dump(tiny_dict))
        assert main(["eval", str(path), "--out", str(tmp_path / protocol), "--quiet"]) == 0
        summary = json.loads((tmp_path / protocol / "summary.json").read_text())
        for m in summary["methods"].values():
            assert 0.0 < m["auc"] <= 1.0 and 0.0 <= m["ndcg@5"] <= m["ndcg@10"] <= 1.0


def test_a_shifted_editor_sample_keeps_its_window_and_target_but_takes_another_history(tiny_dict, monkeypatch):
    """train.editor_shift: the share of samples whose Θb output is another sample's (as after a takeover)."""
    from persona_sim.model.editor import EditorBank
    from persona_sim.model.networks import adaptive_shapes
    from persona_sim.scenario.schema import parse_scenario
    from persona_sim.train import training
    tiny_dict["train"] = {**tiny_dict["train"], "batch_size": 64}
    scenario = parse_scenario(tiny_dict)
    D, shapes = scenario.model.hidden, adaptive_shapes(scenario.model)
    h = torch.arange(64, dtype=torch.float32)[:, None].expand(64, D).contiguous()   # row i is all i
    samples = training.EditorSamples(h, torch.randint(1, 20, (64, 4)), torch.randint(1, 20, (64,)))
    editor = EditorBank(D, shapes, scenario.persona, 1, 0)
    head = {f"{n}.{p}": torch.zeros(1, *((i, o) if p == "weight" else (o,))) for n, (i, o) in shapes.items()
            for p in ("weight", "bias")}
    seen = []
    real = training.adaptive_forward
    monkeypatch.setattr(training, "adaptive_forward", lambda x, params: seen.append(x[:, 0].clone()) or real(x, params))
    for shift, lo, hi in ((0.0, 0, 0), (0.5, 20, 44), (1.0, 56, 64)):
        seen.clear()
        shifted = scenario.model_copy(update={"train": scenario.train.model_copy(update={"editor_shift": shift})})
        order = torch.randperm(64, generator=torch.Generator().manual_seed(0))      # the epoch's own first draw
        opt = torch.optim.SGD(editor.parameters(), lr=0.0)
        training.editor_epoch(editor, head, samples, torch.arange(64), torch.randn(20, D), opt, shifted,
                              torch.Generator().manual_seed(0))
        away = int((seen[0] != order.float()).sum())        # samples whose history is not their own
        assert lo <= away <= hi, (shift, away)


def test_editor_options_train_and_evaluate_at_tiny_scale(tiny_dict, tmp_path):
    tiny_dict["persona"] = {**tiny_dict.get("persona", {}), "encoder": "gru"}
    tiny_dict["train"] = {**tiny_dict["train"], "editor_shift": 0.5}
    path = tmp_path / "options.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    assert main(["eval", str(path), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    methods = json.loads((tmp_path / "ev" / "summary.json").read_text())["methods"]
    assert 0.0 < methods["persona-s"]["ndcg@10"] <= 1.0


def test_a_list_of_editor_shifts_trains_an_editor_for_each_and_keeps_the_best_on_validation(tiny_dict):
    from persona_sim.data.dataset import load_dataset
    from persona_sim.scenario.schema import parse_scenario
    from persona_sim.train.bundle import ensure_bundle, load_bundle

    def bundle(shift):
        scenario = parse_scenario({**tiny_dict, "train": {**tiny_dict["train"], "editor_shift": shift}})
        path, _ = ensure_bundle(scenario, load_dataset(scenario.dataset, scenario.seed), lambda *a: None)
        return load_bundle(path)
    both, alone = bundle([0.0, 0.9]), {s: bundle(s) for s in (0.0, 0.9)}
    scores = {s: b.meta["editor"]["best_ndcg@10"] for s, b in alone.items()}
    chosen = both.meta["editor"]["editor_shift"]
    assert scores[chosen] == max(scores.values()) and scores[0.0] != scores[0.9]
    assert all(torch.equal(v, alone[chosen].models.editor.state_dict()[k])
               for k, v in both.models.editor.state_dict().items())


def test_windows_at_every_position_are_the_last_w_items_up_to_it_left_aligned():
    from persona_sim.train.joint import windows_at_every_position
    inp = torch.tensor([[5, 6, 7, 8, 0]])
    w = windows_at_every_position(inp, 3)[0]
    assert w.tolist() == [[5, 0, 0], [5, 6, 0], [5, 6, 7], [6, 7, 8], [7, 8, 0]]   # the last: padding, unused


def test_the_joint_method_trains_its_own_backbone_and_is_scored_offline_only(tiny_dict, tmp_path, capsys):
    """The authors' joint training: a fresh Θb and editor learn together; static stays the prototype."""
    from persona_sim.data.dataset import load_dataset
    from persona_sim.scenario.schema import parse_scenario
    from persona_sim.train.bundle import ensure_bundle, load_bundle
    tiny_dict["methods"] = ["static", "persona-s", "persona-joint"]
    tiny_dict["train"] = {**tiny_dict["train"], "editor_shift": 0.0}
    path = tmp_path / "joint.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    assert main(["eval", str(path), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert list(summary["methods"]) == ["static", "persona-s", "persona-joint"]
    assert summary["methods"]["persona-joint"]["ndcg@10"] != summary["methods"]["persona-s"]["ndcg@10"]
    scenario = parse_scenario(tiny_dict)
    bundle = load_bundle(ensure_bundle(scenario, load_dataset(scenario.dataset, scenario.seed), lambda *a: None)[0])
    joint, proto = bundle.models.joint.shared.state_dict(), bundle.models.shared.state_dict()
    assert all(not torch.equal(joint[k], proto[k]) for k in proto if k.endswith("weight"))
    assert "joint" in bundle.meta and bundle.meta["joint"]["best_ndcg@10"] > 0
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet", "--transport", "inproc"]) != 0
    assert "methods: persona-joint can only be scored offline" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()                  # refused before anything was trained or written


def test_persona_m_joint_builds_its_groups_on_the_joint_models_and_is_scored_offline(tiny_dict, tmp_path):
    """Groups from the joint editor over the joint Θb (chosen on validation like Persona (m)'s), kept apart from
    Persona (m)'s own groups, which are built on the prototype and the global editor."""
    from persona_sim.data.dataset import load_dataset
    from persona_sim.model.adaptation import edit_groups
    from persona_sim.scenario.schema import parse_scenario
    from persona_sim.train.bundle import ensure_bundle, load_bundle
    tiny_dict["methods"] = ["static", "persona-m", "persona-joint", "persona-joint-m", "joint-unedited"]
    tiny_dict["train"] = {**tiny_dict["train"], "editor_shift": 0.0}
    path = tmp_path / "joint-m.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    assert main(["eval", str(path), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    share = summary["variants"][0]["per_seed"][0]["methods"]["persona-joint-m"]["prototype_share"]
    assert len(share) == tiny_dict["persona"]["prototypes"] and abs(sum(share) - 1) < 1e-3
    assert summary["variants"][0]["per_seed"][0]["joint_groups"] in ("paper", "authors")
    valid = summary["variants"][0]["per_seed"][0]["validation"]   # every part's score that a choice compared
    assert set(valid) == {"prototype", "editor", "groups", "joint", "joint_groups"} and all(0 < v < 1 for v in valid.values())
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "the groups of Persona (m) joint" in report and "- Persona (m) joint: " in report
    scenario = parse_scenario(tiny_dict)
    models = load_bundle(ensure_bundle(scenario, load_dataset(scenario.dataset, scenario.seed), lambda *a: None)[0]).models
    joint = models.jointly_trained()
    assert joint.groups is models.joint.groups and joint.shared is models.joint.shared
    assert not torch.equal(joint.groups.centres, models.groups.centres)
    windows = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0]])
    a, b = edit_groups(joint, windows), edit_groups(models, windows)
    assert any(not torch.equal(a.params[k], b.params[k]) for k in a.params)
    # The ablation: the joint Θb with the prototype's Θc, unedited — neither static nor the joint method.
    methods = summary["variants"][0]["methods"]
    assert methods["joint-unedited"]["ndcg@10"] not in (methods["static"]["ndcg@10"], methods["persona-joint"]["ndcg@10"])
