"""The Parameter Editor bank: shapes, clipping, gradients, saved state, batching over prototypes."""
from __future__ import annotations

import pytest
import torch

from persona_sim.model.editor import EditorBank, apply_edits, edit_norm
from persona_sim.model.networks import adaptive_forward, adaptive_shapes
from persona_sim.scenario.schema import ModelSpec, PersonaSpec

SHAPES = adaptive_shapes(ModelSpec(hidden=8))


def _bank(prototypes=1, seed=0, **persona):
    spec = PersonaSpec(**{"window": 4, "editor_hidden": 16, **persona})
    return EditorBank(8, SHAPES, spec, prototypes, seed)


def _window(b=3):
    torch.manual_seed(1)
    return torch.randn(b, 4, 8), torch.tensor([[True] * 4, [True, True, False, False], [True] + [False] * 3][:b])


@pytest.mark.parametrize("rank", [None, 2])
def test_edits_have_layer_shapes_and_respect_the_clip(rank):
    bank = _bank(prototypes=2, clip=0.05, rank=rank)
    with torch.no_grad():
        for w in bank.head_w:
            w.normal_(0, 5.0)                            # force large raw edits
    edits = bank.edits(*_window())
    assert edits["head.0.weight"].shape == (2, 3, 8, 8) and edits["head.0.bias"].shape == (2, 3, 8)
    assert edits["head.1.weight"].shape == (2, 3, 8, 8) and edits["head.1.bias"].shape == (2, 3, 8)
    for e in edits.values():
        assert e.abs().max() <= 0.05 + 1e-7
        assert (e.abs() == 0.05).any()                   # the clip was active, not vacuous


def test_low_rank_edits_have_at_most_that_rank():
    bank = _bank(rank=2, clip=100.0)
    w = bank.edits(*_window())["head.0.weight"][0]       # (B, 8, 8), unclipped at this T
    assert all(torch.linalg.matrix_rank(m) <= 2 for m in w)
    assert bank.head_w[0].shape[-1] == 8 * 2 + 2 * 8 + 8  # U, V and the bias: far fewer outputs than 8*8+8


def test_edited_weights_are_prototype_plus_edit():
    bank = _bank(prototypes=2)
    proto = {k: torch.randn(2, *v.shape[2:]) for k, v in bank.edits(*_window(1)).items()}
    edits = bank.edits(*_window())
    params = apply_edits(proto, edits)
    for k in proto:
        assert torch.allclose(params[k] - proto[k][:, None], edits[k], atol=1e-6)
    manual = torch.sqrt(sum(e[1, 2].pow(2).sum() for e in edits.values()))
    assert torch.allclose(edit_norm(edits)[1, 2], manual)


@pytest.mark.parametrize("clkt,encoder", [(True, "mean-last"), (False, "mean-last"), (True, "gru")])
def test_every_editor_part_receives_gradients_and_is_saved(clkt, encoder):
    bank = _bank(clkt=clkt, encoder=encoder)
    proto = {k: torch.randn(1, *v.shape[2:]) for k, v in bank.edits(*_window(1)).items()}
    params = {k: v[0] for k, v in apply_edits(proto, bank.edits(*_window())).items()}
    adaptive_forward(torch.randn(3, 8), params).pow(2).sum().backward()
    for name, p in bank.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    state = bank.state_dict()
    assert {"head_w.0", "head_w.1", "head_b.0", "head_b.1", "proj_w.0", "proj_w.1"} <= set(state)
    assert ("gru_wi" in state) == clkt and ("win_wi" in state) == (encoder == "gru")


def test_the_gru_window_encoder_reads_the_items_in_order_and_ignores_padding():
    """The GRU's state after the window's last real item stands in for the items' mean: the order of the items
    matters (it does not for the mean), padding columns change no bit, and a row's edit does not depend on the
    other rows of its call (8-row blocks, as the cloud calls it)."""
    gru, mean = _bank(encoder="gru"), _bank()
    emb, mask = _window()
    flipped = emb.clone()
    flipped[0] = emb[0, [2, 1, 0, 3]]                                   # same items, same last one
    for bank, order_matters in ((gru, True), (mean, False)):
        a, b = bank.edits(emb, mask)["head.0.weight"][0, 0], bank.edits(flipped, mask)["head.0.weight"][0, 0]
        assert (not torch.allclose(a, b)) == order_matters
    wide = torch.cat([emb, torch.randn(3, 2, 8)], 1)                    # two more columns, masked out
    wide_mask = torch.cat([mask, torch.zeros(3, 2, dtype=torch.bool)], 1)
    rows = torch.randn(13, 4, 8)
    rows_mask = torch.rand(13, 4) < 0.7
    rows_mask[:, 0] = True
    block = torch.cat([emb, rows[:5]]), torch.cat([mask, rows_mask[:5]])          # 8 rows
    big = torch.cat([emb, rows]), torch.cat([mask, rows_mask])                    # 16 rows
    for name, e in gru.edits(*_pad8(emb, mask)).items():
        assert torch.equal(e[:, :3], gru.edits(*_pad8(wide, wide_mask))[name][:, :3])
        assert torch.equal(e[:, :3], gru.edits(*block)[name][:, :3])
        assert torch.equal(e[:, :3], gru.edits(*big)[name][:, :3])


def _pad8(emb, mask):
    """Pad a call to 8 rows with empty windows, as the cloud pads its calls."""
    n = 8 - len(emb)
    return (torch.cat([emb, emb.new_zeros(n, *emb.shape[1:])]),
            torch.cat([mask, mask.new_zeros(n, mask.shape[1])]))


def test_clkt_makes_the_second_layer_depend_on_the_first():
    bank = _bank(clkt=True)
    window = _window()
    before = bank.edits(*window)["head.1.weight"]
    with torch.no_grad():
        bank.proj_w[0].add_(0.5)                         # change only layer 1's feature L^1
    assert not torch.allclose(bank.edits(*window)["head.1.weight"], before)
    plain = _bank(clkt=False)
    before = plain.edits(*window)["head.1.weight"]
    with torch.no_grad():
        plain.proj_w[0].add_(0.5)
    assert torch.equal(plain.edits(*window)["head.1.weight"], before)


def test_a_stacked_bank_equals_its_members_run_alone():
    members = [_bank(seed=s) for s in (1, 2, 3)]
    bank = EditorBank.stack(members)
    assert bank.prototypes == 3
    together = bank.edits(*_window())
    for j, m in enumerate(members):
        alone = m.edits(*_window())
        for k in alone:
            assert torch.allclose(together[k][j], alone[k][0], atol=1e-6)
