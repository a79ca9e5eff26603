"""SASRec masking, the Parameter Editor's edits, and bundle save/load."""
from __future__ import annotations

import numpy as np
import torch

from persona_sim.bundle import bundle_bytes, load_bundle_bytes
from persona_sim.config import ModelSpec, PersonaSpec
from persona_sim.editor import ParameterEditor, apply_edits, edit_norm
from persona_sim.models import PrototypeModel, head_forward


def test_sasrec_position_t_sees_only_its_prefix():
    torch.manual_seed(0)
    model = PrototypeModel(30, ModelSpec(hidden=8, max_len=10, dropout=0.0), seed=0).eval()
    seq = torch.tensor([[3, 4, 5, 6, 7, 0, 0]])
    full = model.encoder(seq)[0]
    for t in range(1, 6):
        prefix = model.encoder(seq[:, :t])[0, -1]
        assert torch.allclose(full[t - 1], prefix, atol=1e-5)
    changed = seq.clone()
    changed[0, 4] = 9                                   # a later item must not move earlier outputs
    assert torch.equal(model.encoder(changed)[0, :4], full[:4])


def test_padding_does_not_change_real_positions():
    model = PrototypeModel(30, ModelSpec(hidden=8, max_len=10, dropout=0.0), seed=0).eval()
    short = model.encoder(torch.tensor([[3, 4, 5]]))[0]
    padded = model.encoder(torch.tensor([[3, 4, 5, 0, 0, 0]]))[0, :3]
    assert torch.allclose(short, padded, atol=1e-6)


def _editor(clip=1.0, clkt=True):
    torch.manual_seed(0)
    return ParameterEditor(8, PersonaSpec(window=4, clip=clip, editor_hidden=16, clkt=clkt))


def test_edits_have_layer_shapes_and_respect_the_clip():
    editor = _editor(clip=0.05)
    with torch.no_grad():
        for head in editor.heads.values():
            head.weight.normal_(0, 5.0)                  # force large raw edits
    window = torch.randn(3, 4, 8)
    edits = editor.edits(window, torch.ones(3, 4, dtype=torch.bool))
    assert edits["head.0.weight"].shape == (3, 8, 8) and edits["head.0.bias"].shape == (3, 8)
    assert edits["head.1.weight"].shape == (3, 8, 8) and edits["head.1.bias"].shape == (3, 8)
    for e in edits.values():
        assert e.abs().max() <= 0.05 + 1e-7
        assert (e.abs() == 0.05).any()                   # the clip was active, not vacuous


def test_edited_weights_are_prototype_plus_edit():
    editor = _editor()
    proto = {k: torch.randn(*v.shape[1:]) for k, v in
             editor.edits(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool)).items()}
    edits = editor.edits(torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool))
    params = apply_edits(proto, edits)
    for k in proto:
        assert torch.allclose(params[k] - proto[k][None], edits[k], atol=1e-6)
    norms = edit_norm(edits)
    manual = torch.sqrt(sum(e[1].pow(2).sum() for e in edits.values()))
    assert torch.allclose(norms[1], manual)


def test_every_editor_part_receives_gradients_and_is_saved():
    editor = _editor(clkt=True)
    proto = {"head.0.weight": torch.randn(8, 8), "head.0.bias": torch.zeros(8),
             "head.1.weight": torch.randn(8, 8), "head.1.bias": torch.zeros(8)}
    params = apply_edits(proto, editor.edits(torch.randn(5, 4, 8), torch.ones(5, 4, dtype=torch.bool)))
    head_forward(torch.randn(5, 8), params).pow(2).sum().backward()
    for name, p in editor.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    state = editor.state_dict()
    for layer in ("head_0", "head_1"):
        assert f"heads.{layer}.weight" in state and f"layer_proj.{layer}.weight" in state
    assert any(k.startswith("clkt.") for k in state)
    assert not any(k.startswith("clkt.") for k in _editor(clkt=False).state_dict())


def test_saved_bundle_reloads_to_identical_predictions(tiny_world):
    scenario, dataset, split, path, bundle = tiny_world
    again = load_bundle_bytes(path.read_bytes())
    assert again.signature == bundle.signature
    seq = torch.from_numpy(dataset.sequences[int(split.device_users[0])][None])
    window = seq[:, -4:]
    for b in (bundle, again):
        b.out = head_forward(b.encoder(seq)[:, -1],
                             apply_edits(b.prototype_head, b.editor.edits(b.item_emb[window], window > 0)))
    assert torch.equal(bundle.out, again.out)


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

    from tests.conftest import TINY

    code = ("import hashlib, sys, torch; from persona_sim.bundle import ensure_bundle, load_bundle;"
            "from persona_sim.config import parse_scenario; from persona_sim.dataset import load_dataset;"
            "from persona_sim.split import split_users; from tests.conftest import TINY;"
            "s = parse_scenario(TINY); d = load_dataset(s.dataset, s.seed);"
            "b = load_bundle(ensure_bundle(s, d, split_users(d, s), lambda *a: None)[0]); h = hashlib.sha256();"
            "[h.update(v.numpy().tobytes()) for m in (b.encoder, b.editor) for k, v in sorted(m.state_dict().items())];"
            "print(h.hexdigest())")
    digests = []
    for i, threads in enumerate(("1", "2")):
        env = {"PERSONA_SIM_CACHE": str(tmp_path / str(i)), "OMP_NUM_THREADS": threads, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                             cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
        assert out.returncode == 0, out.stderr
        digests.append(out.stdout.strip())
    assert digests[0] == digests[1]
