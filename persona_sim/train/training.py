"""Training the cloud's global models on historical data (Eq. 4 and 7), selected on validation.

1. The global prototype model (Θb + Θc) is trained end to end with a
   sampled-softmax cross-entropy over every position of the history.
2. Θb and Θc are frozen; the global Parameter Editor learns to edit Θc from the
   window preceding each target item (Eq. 7).
Model selection (best epoch, early stopping) uses the validation cases only.
Persona (m)'s groups build on these (``groups.py``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..model.adaptation import Generator, PersonaModels, edit_global, generate, unedited
from ..model.batching import encode_prefixes, length_batches, pad_right, trim
from ..model.editor import EditorBank, apply_edits
from ..model.networks import PrototypeModel, SharedLayers, adaptive_forward, adaptive_shapes
from ..scenario.schema import Scenario, TrainSpec
from .evaluation import CaseSet, evaluate, mean_metrics

Progress = Callable[[str, int, int], None]   # (stage, step, total)
SELECT_ON = "ndcg@10"


def training_chunks(sequences: list[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Cut sequences into pieces of at most max_len + 1 items (input + shifted target), newest first."""
    chunks = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            start = max(0, end - (max_len + 1))
            chunks.append(seq[start:end])
            end = start + 1 if start > 0 else 0
    return chunks


def sampled_loss(u: torch.Tensor, pos: torch.Tensor, item_emb: torch.Tensor, train: TrainSpec,
                 gen: torch.Generator) -> torch.Tensor:
    """u (N, D) user vectors, pos (N,) their true items; k = ``train.sampled_negatives`` uniform negatives.

    ``sampled-ce``: cross-entropy of the positive against k negatives shared by the batch.
    ``bce``: binary cross-entropy of the positive (label 1) and k negatives of its own (label 0), averaged
    over all 1 + k pairs, as the authors' code trains on labelled rows with pre-sampled negatives.
    """
    k = train.sampled_negatives
    s_pos = (u * item_emb[pos]).sum(1, keepdim=True)                                       # (N, 1)
    if train.loss == "bce":
        neg = torch.randint(1, item_emb.shape[0], (len(u), k), generator=gen)              # (N, k)
        s_neg = torch.einsum("nd,nkd->nk", u, item_emb[neg])                               # (N, k)
        return (F.softplus(-s_pos).sum() + F.softplus(s_neg).sum()) / (len(u) * (1 + k))
    neg = torch.randint(1, item_emb.shape[0], (k,), generator=gen)
    logits = torch.cat([s_pos, u @ item_emb[neg].T], dim=1)                                 # (N, 1 + k)
    return F.cross_entropy(logits, torch.zeros(len(u), dtype=torch.long))


def fit(stage: str, epochs: int, patience: int, run_epoch: Callable[[], None],
        validate: Callable[[], dict[str, float]], module: torch.nn.Module, progress: Progress,
        from_start: bool = False) -> dict:
    """Epochs with validation after each; keep the best state by NDCG@10, stop after ``patience`` stale epochs.
    ``from_start``: the state before any epoch (a fine-tuning's starting point) competes too, as epoch 0."""
    best, best_state, history, stale = -1.0, None, [], 0
    if from_start:
        metrics = validate()
        history.append({"epoch": 0, **{k: round(v, 6) for k, v in metrics.items()}})
        best, best_state = metrics[SELECT_ON], copy.deepcopy(module.state_dict())
    for epoch in range(epochs):
        run_epoch()
        metrics = validate()
        history.append({"epoch": epoch + 1, **{k: round(v, 6) for k, v in metrics.items()}})
        progress(stage, epoch + 1, epochs)
        if metrics[SELECT_ON] > best:
            best, best_state, stale = metrics[SELECT_ON], copy.deepcopy(module.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                progress(stage, epochs, epochs)   # early stop: close the bar
                break
    module.load_state_dict(best_state)
    module.eval()
    return {"best_" + SELECT_ON: round(best, 6), "epochs": history}


def stacked(head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A single prototype's Θc as a bank of one: each tensor (1, ...)."""
    return {k: v.detach()[None].clone() for k, v in head.items()}


def train_prototype(sequences: list[np.ndarray], num_items: int, valid: CaseSet, scenario: Scenario,
                    progress: Progress) -> tuple[PrototypeModel, dict]:
    spec, tr = scenario.model, scenario.train
    torch.manual_seed(scenario.seed)
    gen = torch.Generator().manual_seed(scenario.seed)
    model = PrototypeModel(num_items, spec, scenario.seed)
    chunks = training_chunks(sequences, spec.max_len)
    data = pad_right(chunks, spec.max_len + 1)                       # (C, L + 1)
    lengths = np.asarray([len(c) for c in chunks])
    opt = torch.optim.Adam(model.parameters(), lr=tr.lr)

    def run_epoch() -> None:
        model.train()
        for idx in length_batches(lengths, tr.batch_size, gen):
            batch = trim(data[idx])
            inp, tgt = batch[:, :-1], batch[:, 1:]                  # (B, l) each
            u = model.user_vectors(inp)                             # (B, l, D)
            keep = tgt > 0
            loss = sampled_loss(u[keep], tgt[keep], model.shared.item_emb, tr, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def validate() -> dict[str, float]:
        models = PersonaModels(model.shared, stacked(model.head_params()), None)
        return mean_metrics(evaluate(models, unedited, valid, spec.max_len))

    meta = fit("prototype", tr.epochs, tr.patience, run_epoch, validate, model, progress)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, dict(meta, chunks=len(chunks))


@dataclass
class EditorSamples:
    """Every (h before target, window before target, target) of the history, the editor's training data."""

    h: torch.Tensor          # (N, D) Θb's output before the target
    windows: torch.Tensor    # (N, W) the W items before the target, left-aligned, 0-padded
    targets: torch.Tensor    # (N,)

    def __len__(self) -> int:
        return len(self.targets)


def editor_samples(shared: SharedLayers, sequences: list[np.ndarray], scenario: Scenario) -> EditorSamples:
    h, seq_idx, ts = encode_prefixes(shared, sequences, scenario.model.max_len)
    W = scenario.persona.window
    windows = pad_right([sequences[i][max(0, t - W): t] for i, t in zip(seq_idx, ts)], W)
    targets = torch.from_numpy(np.asarray([sequences[i][t] for i, t in zip(seq_idx, ts)], dtype=np.int64))
    return EditorSamples(h, windows, targets)


def editor_epoch(editor: EditorBank, head: dict[str, torch.Tensor], samples: EditorSamples, rows: torch.Tensor,
                 item_emb: torch.Tensor, opt: torch.optim.Optimizer, scenario: Scenario, gen: torch.Generator) -> None:
    """One pass of Eq. 7 over ``rows`` of the samples: train the editor (a bank of 1) to edit ``head``.

    With ``train.editor_shift`` > 0, that share of the samples is shifted: Θb's output comes from another
    sample (mostly another user's history) while the window and the target stay, as after a takeover, so the
    editor learns to move the model towards what the window shows when the history no longer does."""
    tr = scenario.train
    editor.train()
    for idx in rows[torch.randperm(len(rows), generator=gen)].split(tr.batch_size):
        w = samples.windows[idx]
        h = samples.h[idx]
        if tr.editor_shift > 0:
            shifted = torch.rand(len(idx), generator=gen) < tr.editor_shift
            donors = samples.h[torch.randint(0, len(samples), (len(idx),), generator=gen)]
            h = torch.where(shifted[:, None], donors, h)
        params = {k: v[0] for k, v in apply_edits(head, editor.edits(item_emb[w], w > 0)).items()}   # (B, ...)
        loss = sampled_loss(adaptive_forward(h, params), samples.targets[idx], item_emb, tr, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_editor(model: PrototypeModel, samples: EditorSamples, valid: CaseSet, scenario: Scenario,
                 progress: Progress) -> tuple[EditorBank, dict]:
    tr = scenario.train
    torch.manual_seed(scenario.seed + 1)
    gen = torch.Generator().manual_seed(scenario.seed + 1)
    editor = EditorBank(scenario.model.hidden, adaptive_shapes(scenario.model), scenario.persona, 1, scenario.seed + 1)
    head = stacked(model.head_params())
    opt = torch.optim.Adam(editor.parameters(), lr=tr.editor_lr)
    rows = torch.arange(len(samples))
    models = PersonaModels(model.shared, head, editor)

    meta = fit("editor", tr.editor_epochs, tr.patience,
               lambda: editor_epoch(editor, head, samples, rows, model.shared.item_emb, opt, scenario, gen),
               lambda: mean_metrics(evaluate(models, edit_global, valid, scenario.model.max_len)), editor, progress)
    for p in editor.parameters():
        p.requires_grad_(False)
    return editor, dict(meta, samples=len(samples))


UNCLIPPED = 1e30   # DUET's generator has no clip


def train_generator(model: PrototypeModel, samples: EditorSamples, valid: CaseSet, scenario: Scenario,
                    progress: Progress) -> tuple[Generator, dict]:
    """DUET: a base Θc (starting at the prototype's) and an unclipped editor, trained together on the editor's
    samples with Θb frozen, selected on validation like the editor."""
    tr = scenario.train
    torch.manual_seed(scenario.seed + 2)
    gen = torch.Generator().manual_seed(scenario.seed + 2)
    spec = scenario.persona.model_copy(update={"clip": UNCLIPPED})
    editor = EditorBank(scenario.model.hidden, adaptive_shapes(scenario.model), spec, 1, scenario.seed + 2)
    base = torch.nn.ParameterDict({k.replace(".", "_"): torch.nn.Parameter(v.detach().clone())
                                   for k, v in stacked(model.head_params()).items()})
    head = {k: base[k.replace(".", "_")] for k in model.names}
    holder = torch.nn.ModuleDict({"editor": editor, "base": base})        # one state for model selection
    opt = torch.optim.Adam(holder.parameters(), lr=tr.editor_lr)
    rows = torch.arange(len(samples))
    models = PersonaModels(model.shared, head, editor, generator=Generator(head, editor))
    meta = fit("generator", tr.editor_epochs, tr.patience,
               lambda: editor_epoch(editor, head, samples, rows, model.shared.item_emb, opt, scenario, gen),
               lambda: mean_metrics(evaluate(models, generate, valid, scenario.model.max_len)), holder, progress)
    for p in holder.parameters():
        p.requires_grad_(False)
    return Generator({k: v.detach().clone() for k, v in head.items()}, editor), dict(meta, samples=len(samples))
