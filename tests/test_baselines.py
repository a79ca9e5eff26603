"""The paper's alternatives to Persona: each runs for real, pays its cost where it runs, and nowhere else."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from persona_sim.cli.app import main
from persona_sim.errors import ScenarioError
from persona_sim.methods import METHODS
from persona_sim.model.local import local_data
from persona_sim.scenario.schema import parse_scenario
from persona_sim.sim import simulation
from persona_sim.sim.device import DevicePlan, shared_outputs
from persona_sim.train.evaluation import TEST_PURPOSE, build_cases, evaluate, evaluate_on_device

ALL = [m for m in METHODS if not METHODS[m].offline_only]   # what a run simulates
DEVICE = [m for m in ALL if METHODS[m].where == "device"]
CLOUD = [m for m in ALL if METHODS[m].where == "cloud"]


def _all_methods(tiny_dict: dict) -> dict:
    tiny_dict["methods"] = ALL
    tiny_dict["devices"]["count"] = 6
    tiny_dict["devices"]["compute"] = {"profile": "fixed", "infer_ms": 0.0, "finetune_step_ms": 30.0}
    tiny_dict["baselines"] = {"finetune": {"steps": 3}, "tta": {"steps": 2}, "dccl": {"steps": 3},
                              "cloud_finetune": {"steps": 3}}
    return tiny_dict


@pytest.fixture(scope="module")
def all_runs(tmp_path_factory):
    """Every method over TINY: once over real gRPC, once in-process in 3 shards."""
    import copy

    from tests.conftest import TINY
    root = tmp_path_factory.mktemp("baselines")
    scenario = root / "all.yaml"
    scenario.write_text(yaml.safe_dump(_all_methods(copy.deepcopy(TINY))))
    proc = subprocess.run([sys.executable, "-m", "persona_sim.cli", "run", str(scenario), "--out", str(root / "grpc"),
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert main(["run", str(scenario), "--out", str(root / "inproc"), "--transport", "inproc", "--shards", "3",
                 "--quiet"]) == 0
    return root


def _summary(run) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_every_method_runs_over_both_transports_with_one_digest(all_runs):
    grpc, inproc = _summary(all_runs / "grpc"), _summary(all_runs / "inproc")
    assert grpc["results_digest"] == inproc["results_digest"]
    assert list(grpc["methods"]) == ALL
    for name in DEVICE + CLOUD:
        assert grpc["methods"][name]["adaptations"] > 0, name


def test_a_device_method_pays_its_steps_in_its_stage_times(all_runs):
    """finetune trains every layer at every position of a full (padded) history, so each step costs the profile's
    whole step: 3 × 30 ms, on an idle processor."""
    con = sqlite3.connect(all_runs / "inproc" / "results.sqlite")
    rows = con.execute("SELECT method, issued_us, upload_done_us, download_done_us, applied_us, bytes_up, bytes_down, "
                       "device_us FROM adaptations WHERE method IN (%s)" % ",".join("?" * len(DEVICE)), DEVICE).fetchall()
    assert {r[0] for r in rows} == set(DEVICE)
    for method, issued, up_done, down_done, applied, up, down, device_us in rows:
        assert up_done == down_done == issued and up == down == 0            # no network, no cloud
        assert device_us > 0 and applied - issued >= device_us
        if method == "finetune":
            assert device_us == 3 * 30_000
    firsts = con.execute("SELECT applied_us - issued_us, device_us FROM adaptations WHERE method='finetune' "
                         "AND seq=1").fetchall()
    assert all(span == cost for span, cost in firsts)                       # the processor was idle: no wait
    split = _summary(all_runs / "inproc")["methods"]["finetune"]["latency_split_ms"]
    assert split["network"]["p99"] == split["cloud"]["p99"] == 0.0 and split["device"]["p50"] == 90.0


def test_a_device_step_is_charged_its_flops_relative_to_a_whole_model_step(tiny_dict):
    """The profile's step time is one whole-model step on ``max_len`` items, the loss at every position against
    1 + negatives items; a step that learns at fewer positions costs less, one that scores the catalogue more."""
    from persona_sim.model import flops
    scenario = parse_scenario(tiny_dict)
    m, negatives = scenario.model, scenario.baselines.negatives
    finetune, tta = METHODS["finetune"].device(scenario), METHODS["tta"].device(scenario)
    assert finetune.window >= m.max_len and finetune.step_share(scenario, 500) == 1.0
    short = replace(finetune, window=m.max_len // 2).step_share(scenario, 500)
    assert short == flops.step_flops(m, "all", m.max_len, m.max_len // 2, 1 + negatives) / \
        flops.reference_step_flops(m, negatives) and 0.5 < short < 1.0  # the encoder runs over every item anyway
    small, large = (tta.step_share(scenario, n) for n in (1 + negatives, 20_000))
    assert small < 1.0 < large                         # entropy over 20,000 items: dearer than a fine-tuning step


def test_only_cloud_methods_reach_the_cloud(all_runs):
    con = sqlite3.connect(all_runs / "grpc" / "results.sqlite")
    reported = {m for (m,) in con.execute("SELECT DISTINCT method FROM rounds")}
    assert reported == set(CLOUD)
    for m in CLOUD:
        up, down = con.execute("SELECT MIN(bytes_up), MIN(bytes_down) FROM adaptations WHERE method=?", (m,)).fetchone()
        assert up > 0 and down > 0


def test_device_methods_run_without_any_transport_and_cloud_methods_never_train_on_the_device(
        tiny_world, tiny_dict, monkeypatch):
    from persona_sim.sim.device import plan_device
    scenario = parse_scenario(_all_methods(tiny_dict), "tiny")
    _, dataset, split, _, bundle = tiny_world
    plans = [plan_device(i, int(u), dataset, scenario, bundle) for i, u in enumerate(split.device_users[:3])]
    calls: list[str] = []
    real = simulation.learn_on_device

    def counting(bundle, scenario, part, *args):
        calls.append(part.objective)
        return real(bundle, scenario, part, *args)
    monkeypatch.setattr(simulation, "learn_on_device", counting)
    device_only = scenario.model_copy(update={"methods": DEVICE})
    rec = asyncio.run(simulation.simulate(device_only, bundle, plans, transport=None))   # no cloud at all
    assert len(calls) == len(rec.adaptations) > 0
    with pytest.raises(ValueError, match="needs a transport to the cloud"):
        asyncio.run(simulation.simulate(scenario.model_copy(update={"methods": CLOUD[:1]}), bundle, plans, None))


def test_cloud_methods_never_run_a_backward_pass_on_the_device(all_runs, tiny_world, tiny_dict, monkeypatch):
    """Run the cloud methods in-process with autograd's entry points counted: the only gradients are the
    cloud's (cloud-finetune), never in the device's simulation."""
    from persona_sim.jobs import transport as transport_mod
    from persona_sim.model import ondevice
    grads = {"device": 0, "cloud": 0}
    where = {"now": "device"}
    real_grad = ondevice.grad

    def counting_grad(*a, **k):
        grads[where["now"]] += 1
        return real_grad(*a, **k)
    monkeypatch.setattr(ondevice, "grad", counting_grad)
    real_round = transport_mod.InprocTransport.round

    async def cloud_side(self, report):
        where["now"] = "cloud"
        try:
            return await real_round(self, report)
        finally:
            where["now"] = "device"
    monkeypatch.setattr(transport_mod.InprocTransport, "round", cloud_side)
    scenario = all_runs / "cloud.yaml"
    data = _all_methods(tiny_dict)
    data["methods"] = CLOUD
    scenario.write_text(yaml.safe_dump(data))
    assert main(["run", str(scenario), "--out", str(all_runs / "cloud"), "--transport", "inproc", "--quiet"]) == 0
    assert grads["device"] == 0 and grads["cloud"] > 0


def _plan(bundle, items: list[int], negatives: np.ndarray, gap_us: int = 1_000_000) -> DevicePlan:
    items_a = np.asarray(items, dtype=np.int64)
    positions = np.arange(3, len(items_a))
    cands = np.concatenate([items_a[positions][:, None], negatives], axis=1)     # the true item, then negatives
    return DevicePlan(0, "dev-000000", 0, items_a, positions, (positions - 2) * gap_us, cands,
                      shared_outputs(bundle, items_a, positions), [])


def test_a_slow_method_loses_accuracy_right_after_a_shift(tiny_world, tiny_dict):
    """One device's interest jumps to a single item it never saw. Fine-tuning every interaction teaches the model
    that item; a device whose steps take too long keeps predicting with the old layers, exactly as static does."""
    _, _, _, _, bundle = tiny_world
    tiny_dict["methods"] = ["static", "finetune"]
    tiny_dict["devices"]["policy"] = {"every": 1}
    tiny_dict["baselines"] = {"finetune": {"steps": 10, "lr": 0.01}}
    before, after = [3, 9, 14, 22, 31, 40], [7] * 10                    # the shift: item 7, again and again
    rng = np.random.default_rng(0)
    negatives = np.stack([rng.choice([i for i in range(1, 61) if i not in (7, 3, 9, 14, 22, 31, 40)], 20,
                                     replace=False) for _ in range(len(before) + len(after) - 3)])
    plan = _plan(bundle, before + after, negatives)
    ndcg = {}
    for label, step_ms in (("fast", 1.0), ("slow", 1e6)):
        tiny_dict["devices"]["compute"] = {"profile": "fixed", "finetune_step_ms": step_ms}
        scenario = parse_scenario(tiny_dict, "tiny")
        rec = asyncio.run(simulation.simulate(scenario, bundle, [plan], transport=None))
        rows = [r for r in rec.predictions if r[0] == "finetune"]
        static = [r for r in rec.predictions if r[0] == "static"]
        shifted = [i for i, r in enumerate(rows) if r[4] == 7][2:]         # from the third event on the new item
        ndcg[label] = float(np.mean([rows[i][10] for i in shifted]))
        ndcg["static"] = float(np.mean([static[i][10] for i in shifted]))
        if label == "slow":
            assert [r[6:] for r in rows] == [r[6:] for r in static]         # the old layers, every event
    assert ndcg["fast"] > ndcg["slow"] == ndcg["static"]


def test_zero_learning_rate_leaves_every_device_at_the_prototype(tiny_world):
    """On-device learning with lr 0 must reproduce static's scores exactly: nothing leaks in from the batching."""
    scenario, dataset, split, _, bundle = tiny_world
    from persona_sim.data.split import training_data
    cases = build_cases(dataset, training_data(dataset, scenario, "leave-one-out").test, scenario, TEST_PURPOSE)
    static = evaluate(bundle.models, METHODS["static"].adapt, cases, scenario.model.max_len)
    for name in DEVICE:
        part = METHODS[name].device(scenario)
        zero = type(part)(**{**part.__dict__, "lr": 0.0})
        out = evaluate_on_device(bundle.models, zero, cases, scenario.model.max_len, scenario.seed)
        np.testing.assert_allclose(out["scores"], static["scores"], rtol=1e-5, atol=1e-5, err_msg=name)


def test_local_rows_pair_each_position_with_the_item_after_it():
    data = local_data([np.array([4, 5, 6, 7]), np.array([9])], max_len=2, window=1, labelled=True)
    assert data.seqs.tolist() == [[5, 6], [0, 0]] and data.targets.tolist() == [[6, 7], [0, 0]]
    assert data.mask.tolist() == [[False, True], [False, False]]
    unlabelled = local_data([np.array([4, 5, 6, 7])], max_len=3, window=2, labelled=False)
    assert unlabelled.seqs.tolist() == [[5, 6, 7]] and unlabelled.mask.tolist() == [[False, True, True]]


@pytest.mark.parametrize("patch, message", [
    ({"methods": ["static", "fine-tune"]}, "methods.1: .*'finetune'.*got 'fine-tune'"),
    ({"baselines": {"tta": {"rank": 4}}}, "baselines.tta.rank.*unknown key"),
    ({"baselines": {"finetune": {"stepz": 4}}}, "baselines.finetune.stepz.*did you mean 'steps'"),
    ({"methods": ["tta"], "model": {"arch": "gru4rec"}}, "baselines.tta.layers 'norm'.*gru4rec"),
])
def test_bad_method_settings_name_the_key(tiny_dict, patch, message):
    for k, v in patch.items():
        tiny_dict[k] = {**tiny_dict.get(k, {}), **v} if isinstance(v, dict) and k != "baselines" else v
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(tiny_dict, "tiny.yaml")


def test_on_device_learning_changes_only_what_it_trains(tiny_world):
    scenario, dataset, _, _, bundle = tiny_world
    models = bundle.models
    data = local_data([dataset.sequences[0], dataset.sequences[1]], scenario.model.max_len, 5, labelled=True)
    gen = torch.Generator().manual_seed(0)
    for name, changes_shared in (("finetune", True), ("dccl", False)):
        learned = METHODS[name].device(scenario).learn(models, data, gen)
        assert (learned.shared is not None) == changes_shared
        assert all(v.shape[0] == 2 for v in learned.head.values())
        assert any(not torch.equal(v[0], models.head[k][0]) for k, v in learned.head.items())


def test_eval_runs_every_method_with_its_modelled_time(tiny_dict, tmp_path):
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump(_all_methods(tiny_dict)))
    assert main(["eval", str(path), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    methods = _summary(tmp_path / "ev")["methods"]
    assert list(methods) == ALL
    assert methods["static"]["modelled_ms"] is None
    ft = methods["finetune"]["modelled_ms"]
    assert ft == methods["finetune"]["modelled_compute_ms"] == 3 * 30.0    # every layer: whole steps, no network
    assert 0 < methods["dccl"]["modelled_ms"] < ft                         # the head only: a share of a step
    persona = methods["persona-s"]
    assert 0 < persona["modelled_compute_ms"] < persona["modelled_ms"]     # + upload and download
    assert methods["cloud-finetune"]["modelled_compute_ms"] > persona["modelled_compute_ms"]   # + 3 cloud steps
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "| Fine-tune |" in report and f"{ft:.1f} ms |" in report
    assert f"({persona['modelled_compute_ms']:.1f} ms)" in report


def test_every_cloud_method_gives_a_request_the_same_layers_alone_or_in_a_batch(tiny_dict):
    from persona_sim.data.dataset import load_dataset
    from persona_sim.sim.cloud_engine import CloudEngine
    from persona_sim.train.bundle import ensure_bundle, load_bundle
    from persona_sim.wire.messages import AdaptRequest

    scenario = parse_scenario(_all_methods(tiny_dict), "tiny")
    dataset = load_dataset(scenario.dataset, scenario.seed)
    path, _ = ensure_bundle(scenario, dataset, lambda *a: None)
    engine = CloudEngine(scenario, load_bundle(path), 1)
    rng = np.random.default_rng(0)
    for method in CLOUD:
        reqs = [AdaptRequest(f"dev-{i:06d}", 1, 0, method, tuple(int(x) for x in rng.integers(1, 61, rng.integers(1, 9))))
                for i in range(12)]
        alone = [engine.compute(method, [r])[0] for r in reqs]
        together = engine.compute(method, reqs)
        for a, b in zip(alone, together):
            assert all(a.params[n].tobytes() == b.params[n].tobytes() for n in a.params), (method, a.device_id)
