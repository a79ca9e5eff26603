"""Persona (m): k-means partition, dynamic assignment (Eq. 11-12), group training."""
from __future__ import annotations

import copy

import pytest
import torch

from persona_sim.methods import METHODS
from persona_sim.model.adaptation import Groups, PersonaModels
from persona_sim.model.editor import EditorBank, apply_edits, edit_norm
from persona_sim.model.networks import SharedLayers, adaptive_shapes
from persona_sim.scenario.schema import ModelSpec, PersonaSpec, parse_scenario
from persona_sim.train.groups import kmeans

SPEC = ModelSpec(hidden=8)


def test_kmeans_recovers_separated_blobs():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=gen) for c in centres])
    found = kmeans(x, 3, torch.Generator().manual_seed(1))
    matched = sorted(int(torch.cdist(c[None], found).argmin()) for c in centres)
    assert matched == [0, 1, 2]                           # one found centre per blob
    assert torch.cdist(centres, found).min(1).values.max() < 0.1


def _models(assignment="edit-norm"):
    torch.manual_seed(0)
    shared = SharedLayers(20, SPEC, torch.Generator().manual_seed(0)).eval()
    persona = PersonaSpec(window=4, editor_hidden=16, clip=5.0, assignment=assignment)
    shapes = adaptive_shapes(SPEC)
    editors = []
    for scale in (3.0, 0.2, 1.0):                        # editor 1 makes the smallest edits
        e = EditorBank(8, shapes, persona, 1, seed=int(scale * 10))
        with torch.no_grad():
            for b in e.head_b:
                b.fill_(scale * 0.1)
        editors.append(e)
    heads = {k: torch.randn(3, *s) for k, s in
             (("head.0.weight", (8, 8)), ("head.0.bias", (8,)), ("head.1.weight", (8, 8)), ("head.1.bias", (8,)))}
    centres = torch.randn(3, sum(a * b + b for a, b in shapes.values()))
    groups = Groups(heads, EditorBank.stack(editors), centres)
    return PersonaModels(shared, {k: v[:1] for k, v in heads.items()}, editors[2], groups, assignment)


def test_dynamic_assignment_picks_the_smallest_edit():
    models = _models()
    windows = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]])
    out = METHODS["persona-m"].adapt(models, windows)
    edits = models.groups.editor.edits(models.item_emb[windows], windows > 0)
    norms = edit_norm(edits)                              # (3 groups, 3 windows)
    assert torch.equal(out.prototype, norms.argmin(0)) and (out.prototype == 1).all()
    expected = apply_edits(models.groups.heads, edits)
    for k, v in out.params.items():
        assert torch.equal(v, expected[k][1])             # group 1's PM plus group 1's edit
    assert torch.allclose(out.edit_norm, norms[1])


def test_nearest_centre_assignment_follows_the_global_edit():
    models = _models("nearest-centre")
    windows = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    out = METHODS["persona-m"].adapt(models, windows)
    from persona_sim.model.editor import flat_edits
    g = flat_edits(models.editor.edits(models.item_emb[windows], windows > 0))[0]
    assert torch.equal(out.prototype, torch.cdist(g, models.groups.centres).argmin(1))


def test_trained_groups_partition_the_history_and_serve_persona_m(tmp_path, monkeypatch):
    from persona_sim.data.dataset import load_dataset
    from persona_sim.train.bundle import ensure_bundle, load_bundle
    from tests.conftest import TINY

    monkeypatch.setenv("PERSONA_SIM_CACHE", str(tmp_path))
    data = copy.deepcopy(TINY)
    data.update(methods=["static", "persona-s", "persona-m"], persona={**data["persona"], "prototypes": 3})
    scenario = parse_scenario(data)
    dataset = load_dataset(scenario.dataset, scenario.seed)
    bundle = load_bundle(ensure_bundle(scenario, dataset, lambda *a: None, "leave-one-out")[0])
    meta = bundle.meta["groups"]
    assert len(meta["group_sizes"]) == 3 and sum(meta["group_sizes"]) == bundle.meta["editor"]["samples"]
    groups = bundle.models.groups
    assert groups.count == 3 and groups.heads["head.0.weight"].shape == (3, 8, 8)
    # Group PMs were fine-tuned away from the global PM, each differently.
    assert not torch.allclose(groups.heads["head.1.weight"][0], bundle.models.head["head.1.weight"][0])
    assert not torch.allclose(groups.heads["head.1.weight"][0], groups.heads["head.1.weight"][1])
    out = METHODS["persona-m"].adapt(bundle.models, torch.tensor([[1, 2, 3, 4]]))
    assert 0 <= int(out.prototype[0]) < 3


def test_global_prototypes_option_keeps_the_global_pm(tmp_path, monkeypatch):
    from persona_sim.data.dataset import load_dataset
    from persona_sim.train.bundle import ensure_bundle, load_bundle
    from tests.conftest import TINY

    monkeypatch.setenv("PERSONA_SIM_CACHE", str(tmp_path))
    data = copy.deepcopy(TINY)
    data.update(methods=["persona-m"], persona={**data["persona"], "prototypes": 2, "group_prototypes": False})
    scenario = parse_scenario(data)
    bundle = load_bundle(ensure_bundle(scenario, load_dataset(scenario.dataset, 3), lambda *a: None,
                                       "leave-one-out")[0])
    for k, v in bundle.models.groups.heads.items():
        assert torch.equal(v[0], bundle.models.head[k][0]) and torch.equal(v[1], bundle.models.head[k][0])


def test_a_fine_tuning_that_never_beats_its_start_keeps_the_start():
    """fit(from_start=True): the state before any epoch competes on validation, as epoch 0."""
    from persona_sim.train.training import fit
    w = torch.nn.Parameter(torch.tensor(1.0), requires_grad=False)
    module = torch.nn.ParameterDict({"w": w})

    def worse() -> None:
        with torch.no_grad():
            w.sub_(0.1)

    meta = fit("t", 3, 5, worse, lambda: {"ndcg@10": float(w)}, module, lambda *a: None, from_start=True)
    assert float(w) == 1.0 and meta["best_ndcg@10"] == 1.0 and [e["epoch"] for e in meta["epochs"]] == [0, 1, 2, 3]
    fit("t", 3, 5, worse, lambda: {"ndcg@10": float(w)}, module, lambda *a: None)
    assert abs(float(w) - 0.9) < 1e-6                        # without it, the best epoch is kept even if worse


def test_the_authors_groups_cluster_codes_and_start_each_pm_at_its_centres_edit(tiny_dict):
    """persona.groups: authors — k-means over the global PE's codes, group PM = global PM + the centre's edit
    (not fine-tuned), devices assigned to the nearest centre in code space."""
    from persona_sim.data.dataset import load_dataset
    from persona_sim.model.adaptation import edit_groups, partition_vectors
    from persona_sim.scenario.schema import parse_scenario
    from persona_sim.train.bundle import ensure_bundle, load_bundle
    tiny_dict["methods"] = ["static", "persona-s", "persona-m"]
    tiny_dict["persona"] = {**tiny_dict.get("persona", {}), "groups": "authors", "assignment": "nearest-centre",
                            "prototypes": 3}
    tiny_dict["train"] = {**tiny_dict["train"], "editor_shift": 0.0}
    scenario = parse_scenario(tiny_dict)
    bundle = load_bundle(ensure_bundle(scenario, load_dataset(scenario.dataset, scenario.seed), lambda *a: None)[0])
    models, groups = bundle.models, bundle.models.groups
    H = scenario.persona.editor_hidden
    assert groups.space == "codes" and groups.centres.shape == (3, 2 * H)      # two adaptive layers' codes
    centre_edits = models.editor.edits_from_codes(groups.centres[None])
    for name, head in groups.heads.items():
        assert torch.allclose(head, models.head[name][0] + centre_edits[name][0], atol=1e-6)
    windows = torch.randint(1, bundle.num_items, (16, scenario.persona.window))
    codes = partition_vectors(models.editor, models.item_emb[windows], windows > 0, "codes")
    assert torch.equal(edit_groups(models, windows).prototype, ((codes[:, None] - groups.centres) ** 2).sum(-1).argmin(1))


def test_a_list_of_groups_variants_trains_each_and_keeps_the_best_on_validation(tiny_dict):
    """persona.groups: [paper, authors] — both trained, the one whose group editors validate best is kept,
    with its own assignment (the authors': nearest centre), identical to training it alone."""
    from persona_sim.data.dataset import load_dataset
    from persona_sim.scenario.schema import parse_scenario
    from persona_sim.train.bundle import ensure_bundle, load_bundle
    tiny_dict["methods"] = ["static", "persona-s", "persona-m", "group-finetune"]
    tiny_dict["train"] = {**tiny_dict["train"], "editor_shift": 0.0}

    def bundle(groups):
        tiny_dict["persona"] = {**tiny_dict.get("persona", {}), "groups": groups, "prototypes": 3}
        scenario = parse_scenario(tiny_dict)
        return load_bundle(ensure_bundle(scenario, load_dataset(scenario.dataset, scenario.seed), lambda *a: None)[0])
    both, alone = bundle(["paper", "authors"]), {g: bundle(g) for g in ("paper", "authors")}
    scores = {g: b.meta["groups"]["group_editors"]["best_ndcg@10"] for g, b in alone.items()}
    chosen = both.meta["groups"]["groups"]
    assert scores[chosen] == max(scores.values()) and scores["paper"] != scores["authors"]
    assert both.models.assignment == alone[chosen].models.assignment
    assert alone["authors"].models.assignment == "nearest-centre" and alone["paper"].models.assignment == "edit-norm"
    assert all(torch.equal(v, alone[chosen].models.groups.editor.state_dict()[k])
               for k, v in both.models.groups.editor.state_dict().items())
    # Group fine-tuning serves the paper's groups (fine-tuned PMs) whichever Persona (m) serves.
    paper = alone["paper"].models
    assert paper.tuned_groups is None and alone["authors"].models.tuned_groups is not None
    windows = torch.randint(1, both.num_items, (16, 4))
    gft = METHODS["group-finetune"].adapt
    for models in (both.models, alone["authors"].models):
        assert all(torch.equal(v, gft(paper, windows).params[k]) for k, v in gft(models, windows).params.items())


def test_groups_must_be_a_known_variant_or_a_list_of_distinct_ones(tiny_dict):
    from persona_sim.errors import ScenarioError
    from persona_sim.scenario.schema import parse_scenario
    for bad in (["paper", "paper"], [], "nobody"):
        tiny_dict["persona"] = {**tiny_dict.get("persona", {}), "groups": bad}
        with pytest.raises(ScenarioError, match="groups"):
            parse_scenario(tiny_dict)
