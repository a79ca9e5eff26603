"""The encoders' causality, the shared/adaptive split, and bundle save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from persona_sim.methods import METHODS
from persona_sim.model.networks import PrototypeModel, adaptive_forward, head_layer_names
from persona_sim.scenario.schema import ModelSpec
from persona_sim.train.bundle import load_bundle_bytes


@pytest.mark.parametrize("arch", ["sasrec", "gru4rec"])
def test_position_t_sees_only_its_prefix(arch):
    torch.manual_seed(0)
    model = PrototypeModel(30, ModelSpec(arch=arch, hidden=8, blocks=2, max_len=10, dropout=0.0), seed=0).eval()
    seq = torch.tensor([[3, 4, 5, 6, 7, 0, 0]])
    full = model.shared(seq)[0]
    for t in range(1, 6):
        prefix = model.shared(seq[:, :t])[0, -1]
        assert torch.allclose(full[t - 1], prefix, atol=1e-5)
    changed = seq.clone()
    changed[0, 4] = 9                                   # a later item must not move earlier outputs
    assert torch.equal(model.shared(changed)[0, :4], full[:4])


@pytest.mark.parametrize("arch", ["sasrec", "gru4rec"])
def test_padding_does_not_change_real_positions(arch):
    model = PrototypeModel(30, ModelSpec(arch=arch, hidden=8, max_len=10, dropout=0.0), seed=0).eval()
    short = model.shared(torch.tensor([[3, 4, 5]]))[0]
    padded = model.shared(torch.tensor([[3, 4, 5, 0, 0, 0]]))[0, :3]
    assert torch.allclose(short, padded, atol=1e-6)


def test_head_splits_into_shared_and_adaptive_layers():
    spec = ModelSpec(hidden=8, head_layers=3, adaptive_layers=2)
    assert head_layer_names(spec) == (["head.0"], ["head.1", "head.2"])
    model = PrototypeModel(30, spec, seed=0)
    assert list(model.head_params()) == ["head.1.weight", "head.1.bias", "head.2.weight", "head.2.bias"]
    assert len(model.shared.shared_head) == 1           # head.0 is part of Θb
    u = model.user_vectors(torch.tensor([[3, 4, 5]]))
    assert u.shape == (1, 3, 8)


def test_per_row_weights_match_shared_weights():
    model = PrototypeModel(30, ModelSpec(hidden=8), seed=0)
    params = model.head_params()
    h = torch.randn(5, 8)
    per_row = {k: v[None].expand(5, *v.shape) for k, v in params.items()}
    assert torch.allclose(adaptive_forward(h, params), adaptive_forward(h, per_row), atol=1e-6)


def test_saved_bundle_reloads_to_identical_predictions(tiny_world):
    scenario, dataset, split, path, bundle = tiny_world
    again = load_bundle_bytes(path.read_bytes())
    assert again.signature == bundle.signature
    seq = torch.from_numpy(dataset.sequences[int(split.device_users[0])][None])
    window = seq[:, -4:]
    outs = []
    for b in (bundle, again):
        params = METHODS["persona-s"].adapt(b.models, window).params
        outs.append(adaptive_forward(b.shared(seq)[:, -1], params))
    assert torch.equal(outs[0], outs[1])


def test_training_improves_on_an_untrained_model(tiny_world):
    *_, bundle = tiny_world
    first = bundle.meta["prototype"]["epochs"][0]["ndcg@10"]
    assert bundle.meta["prototype"]["best_ndcg@10"] >= first
    assert bundle.meta["editor"]["samples"] > 0
    assert np.isfinite(bundle.meta["editor"]["best_ndcg@10"])


def test_training_is_bit_reproducible_in_fresh_processes(tmp_path):
    """Two trainings of the same scenario in separate processes give identical weights."""
    import subprocess
    import sys

    code = ("import hashlib, copy; from persona_sim.train.bundle import ensure_bundle, load_bundle;"
            "from persona_sim.scenario.schema import parse_scenario; from persona_sim.data.dataset import load_dataset;"
            "from tests.conftest import TINY; t = copy.deepcopy(TINY); t['methods'] = ['static', 'persona-m'];"
            "t['persona']['prototypes'] = 2; s = parse_scenario(t); d = load_dataset(s.dataset, s.seed);"
            "b = load_bundle(ensure_bundle(s, d, lambda *a: None)[0]); h = hashlib.sha256();"
            "[h.update(v.numpy().tobytes()) for m in (b.shared, b.models.editor, b.models.groups.editor)"
            " for k, v in sorted(m.state_dict().items())];"
            "print(h.hexdigest())")
    digests = []
    for i, threads in enumerate(("1", "2")):
        env = {"PERSONA_SIM_CACHE": str(tmp_path / str(i)), "OMP_NUM_THREADS": threads, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                             cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
        assert out.returncode == 0, out.stderr
        digests.append(out.stdout.strip())
    assert digests[0] == digests[1]


def test_a_device_scores_a_stretch_of_events_as_torch_scores_each_alone(tiny_world):
    from persona_sim.sim.device import DeviceState, plan_device, prototype_params
    from persona_sim.sim.scoring import scores
    from persona_sim.train.bundle import item_matrix

    scenario, dataset, split, _, bundle = tiny_world
    plan = plan_device(0, int(split.device_users[0]), dataset, scenario, bundle)
    state, emb = DeviceState(prototype_params(bundle)), item_matrix(bundle)
    n = len(plan.positions)
    stretch = scores([state.stretch(plan, 0, n)], emb)                               # (n, 1 + K) in one go
    params = {k: v[0] for k, v in bundle.models.head.items()}
    u = adaptive_forward(torch.from_numpy(plan.h), params)                            # torch's GELU, per event
    for e in range(n):
        cands = plan.cands[e]
        assert cands[0] == plan.items[plan.positions[e]] and plan.cands.shape[1] == 1 + scenario.eval.negatives
        expect = (torch.from_numpy(emb[cands]) @ u[e]).numpy()
        assert stretch.dtype == np.float32 and np.allclose(stretch[e], expect, atol=1e-5)
        assert np.allclose(scores([state.stretch(plan, e, e + 1)], emb)[0], stretch[e], atol=1e-6)


def test_stretches_scored_together_get_the_bits_they_get_alone(tiny_world, monkeypatch):
    """Scoring batches stretches of many devices and layers: no event's scores may depend on its company."""
    from persona_sim.sim import scoring
    from persona_sim.sim.device import DeviceState, plan_device, prototype_params
    from persona_sim.train.bundle import item_matrix

    scenario, dataset, split, _, bundle = tiny_world
    emb, rng = item_matrix(bundle), np.random.default_rng(0)
    stretches = []
    for i, user in enumerate(split.device_users[:6]):
        plan = plan_device(i, int(user), dataset, scenario, bundle)
        layers = {k: v + rng.normal(0, 0.1, v.shape).astype(np.float32) for k, v in prototype_params(bundle).items()}
        cut = len(plan.positions) // 3
        stretches += [DeviceState(layers, edit_seq=1).stretch(plan, 0, cut),
                      DeviceState(prototype_params(bundle)).stretch(plan, cut, len(plan.positions))]
    monkeypatch.setattr(scoring, "GATHER_ROWS", 7)    # gathers that straddle stretches, as large batches do
    together = scoring.scores(stretches, emb)
    alone = np.concatenate([scoring.scores([s], emb) for s in stretches])
    assert together.tobytes() == alone.tobytes()



def test_devices_planned_over_forked_processes_get_the_plans_planned_here(tiny_world, monkeypatch):
    """Planning is spread over processes in chunks; a device's plan (streams, shifts, Θb outputs) may not
    depend on which process planned it or with which others."""
    from persona_sim import forks
    from persona_sim.jobs.shard import plan_shard
    from persona_sim.train.bundle import reproducible_torch

    scenario, dataset, _, _, bundle = tiny_world
    monkeypatch.setattr(forks, "CHUNK", 3)           # several chunks per process, children and this one
    with reproducible_torch():                          # one thread, as runs plan
        here = plan_shard(scenario, bundle, dataset, 0, 1, workers=1)
        spread = plan_shard(scenario, bundle, dataset, 0, 1, workers=3)
    assert [p.index for p in spread] == [p.index for p in here] and any(p.shifts for p in here)
    for a, b in zip(here, spread):
        for name in ("items", "positions", "times_us", "cands", "h"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), (a.index, name)
        assert a.shifts == b.shifts


def test_the_chunks_of_map_devices_run_in_other_processes_too():
    import os

    from persona_sim.forks import map_devices
    from persona_sim.train.bundle import reproducible_torch

    with reproducible_torch():
        pids = map_devices(lambda i: (i, os.getpid()), range(10), workers=3, chunk=2)
    assert [i for i, _ in pids] == list(range(10))
    assert len({pid for _, pid in pids}) >= 2 and os.getpid() in {pid for _, pid in pids}

