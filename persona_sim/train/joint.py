"""The authors' joint training (their public code, not the paper's text): a fresh backbone Θb' and the
Parameter Editor learn together from scratch, end to end, with the global prototype's Θc as a fixed offset.

At every position t of a training chunk the user vector is Θc + Clip(G(window_t)) applied to Θb'(items ≤ t),
window_t being the W items up to t (what a device would send before item t + 1), and the loss is the
prototype's (sampled softmax over every position). Selected on validation like every other stage.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..model.adaptation import PersonaModels, edit_global
from ..model.batching import length_batches, pad_right, trim
from ..model.editor import EditorBank, apply_edits
from ..model.networks import SharedLayers, adaptive_forward, adaptive_shapes
from ..scenario.schema import Scenario
from .evaluation import CaseSet, evaluate, mean_metrics
from .training import Progress, fit, sampled_loss, training_chunks

SEED_OFFSET = 3   # the joint stage's own seed (prototype 0, editor 1, DUET 2)


def windows_at_every_position(inp: torch.Tensor, width: int) -> torch.Tensor:
    """inp (B, l) right-padded items -> (B, l, W): at position t the last W items up to t, left-aligned and
    0-padded, the format devices send (padding positions give windows the loss never uses)."""
    l = inp.shape[1]
    t = torch.arange(l)
    n = torch.clamp(t + 1, max=width)                                   # (l,) real items in each window
    k = torch.arange(width)
    pos = (t - n + 1)[:, None] + k[None, :]                             # (l, W) where each window slot reads
    real = k[None, :] < n[:, None]
    return inp[:, pos.clamp(max=l - 1)] * real                          # (B, l, W)


def train_joint(sequences: list[np.ndarray], num_items: int, head: dict[str, torch.Tensor], valid: CaseSet,
                scenario: Scenario, progress: Progress) -> tuple[SharedLayers, EditorBank, dict]:
    """``head``: the global prototype's Θc, each (1, ...), kept fixed."""
    spec, tr, W = scenario.model, scenario.train, scenario.persona.window
    seed = scenario.seed + SEED_OFFSET
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    shared = SharedLayers(num_items, spec, torch.Generator().manual_seed(seed))
    editor = EditorBank(spec.hidden, adaptive_shapes(spec), scenario.persona, 1, seed)
    holder = nn.ModuleDict({"shared": shared, "editor": editor})
    opt = torch.optim.Adam(holder.parameters(), lr=tr.lr)
    chunks = training_chunks(sequences, spec.max_len)
    data = pad_right(chunks, spec.max_len + 1)                          # (C, L + 1)
    lengths = np.asarray([len(c) for c in chunks])
    models = PersonaModels(shared, head, editor)

    def run_epoch() -> None:
        holder.train()
        for idx in length_batches(lengths, tr.batch_size, gen):
            batch = trim(data[idx])
            inp, tgt = batch[:, :-1], batch[:, 1:]                      # (B, l) each
            keep = tgt > 0
            w = windows_at_every_position(inp, W)[keep]                 # (N, W)
            edits = editor.edits(shared.item_emb[w], w > 0)             # each (1, N, ...)
            params = {k: v[0] for k, v in apply_edits(head, edits).items()}
            u = adaptive_forward(shared(inp)[keep], params)             # (N, D)
            loss = sampled_loss(u, tgt[keep], shared.item_emb, tr, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()

    meta = fit("joint", tr.epochs, tr.patience, run_epoch,
               lambda: mean_metrics(evaluate(models, edit_global, valid, spec.max_len)), holder, progress)
    for p in holder.parameters():
        p.requires_grad_(False)
    return shared, editor, dict(meta, chunks=len(chunks))
