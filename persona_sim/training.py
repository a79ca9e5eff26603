"""Training the cloud's models on historical data (Eq. 4 and 7), selected on validation.

1. The prototype model (Θb + Θc) is trained end to end with a sampled-softmax
   cross-entropy over every position of the training users' sequences.
2. Θb and Θc are frozen; the Parameter Editor is trained to edit Θc from the
   window preceding each target item (Eq. 7).
Model selection (best epoch, early stopping) uses the validation users' last
items only; device users are never seen.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import Scenario
from .dataset import Dataset
from .editor import ParameterEditor, apply_edits
from .metrics import rank_metrics, sample_negatives
from .models import PrototypeModel, head_forward
from .split import Split

Progress = Callable[[str, int, int], None]   # (stage, step, total)


def _pad_right(rows: list[np.ndarray], length: int) -> torch.Tensor:
    out = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


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


def windows_before(seq: np.ndarray, t: int, w: int) -> np.ndarray:
    """The device's real-time window before predicting item t: the last w items, oldest first."""
    return seq[max(0, t - w): t]


@dataclass
class ValidationSet:
    inputs: torch.Tensor      # (V, L) right-padded histories
    last: torch.Tensor        # (V,) index of the last real position
    windows: torch.Tensor     # (V, W) left-aligned windows, 0-padded
    candidates: torch.Tensor  # (V, 1 + K) true item first


def build_validation(dataset: Dataset, users: np.ndarray, scenario: Scenario) -> ValidationSet:
    rng = np.random.default_rng([scenario.seed, 0x7A11])
    L, W, K = scenario.model.max_len, scenario.persona.window, scenario.eval.negatives
    hist, wins, cands = [], [], []
    for u in users:
        seq = dataset.sequences[u]
        hist.append(seq[:-1][-L:])
        wins.append(windows_before(seq, len(seq) - 1, W))
        neg = sample_negatives(rng, dataset.num_items, seq, 1, K)[0]
        cands.append(np.concatenate([[seq[-1]], neg]))
    inputs = _pad_right(hist, L)
    return ValidationSet(inputs, torch.tensor([len(h) - 1 for h in hist]), _pad_right(wins, W),
                         torch.from_numpy(np.stack(cands)))


def _score(u: torch.Tensor, item_emb: torch.Tensor, cands: torch.Tensor) -> np.ndarray:
    return torch.einsum("bd,bkd->bk", u, item_emb[cands]).numpy()        # (B, 1 + K)


def _summarise(scores: np.ndarray) -> dict[str, float]:
    m = rank_metrics(scores)
    return {k: float(m[k].mean()) for k in ("hr@5", "hr@10", "ndcg@5", "ndcg@10", "auc")}


@torch.no_grad()
def validate_prototype(model: PrototypeModel, val: ValidationSet) -> dict[str, float]:
    model.eval()
    h = model.encoder(val.inputs)[torch.arange(len(val.last)), val.last]  # (V, D)
    u = head_forward(h, model.head_params())
    return _summarise(_score(u, model.encoder.item_emb.weight, val.candidates))


@torch.no_grad()
def validate_editor(model: PrototypeModel, editor: ParameterEditor, val: ValidationSet) -> dict[str, float]:
    model.eval()
    editor.eval()
    emb = model.encoder.item_emb.weight
    h = model.encoder(val.inputs)[torch.arange(len(val.last)), val.last]
    params = apply_edits(model.head_params(), editor.edits(emb[val.windows], val.windows > 0))
    return _summarise(_score(head_forward(h, params), emb, val.candidates))


def _sampled_ce(u: torch.Tensor, pos: torch.Tensor, item_emb: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Cross-entropy of the positive against k shared uniform negatives. u (N, D), pos (N,)."""
    neg = torch.randint(1, item_emb.shape[0], (k,), generator=gen)
    logits = torch.cat([(u * item_emb[pos]).sum(1, keepdim=True), u @ item_emb[neg].T], dim=1)   # (N, 1 + k)
    return F.cross_entropy(logits, torch.zeros(len(u), dtype=torch.long))


def _fit(stage: str, epochs: int, patience: int, run_epoch: Callable[[], None],
         validate: Callable[[], dict[str, float]], module: torch.nn.Module, progress: Progress) -> dict:
    """Epochs with validation after each; keep the best state by NDCG@10, stop after ``patience`` stale epochs."""
    best, best_state, history, stale = -1.0, None, [], 0
    for epoch in range(epochs):
        run_epoch()
        metrics = validate()
        history.append({"epoch": epoch + 1, **metrics})
        progress(stage, epoch + 1, epochs)
        if metrics["ndcg@10"] > best:
            best, best_state, stale = metrics["ndcg@10"], copy.deepcopy(module.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                progress(stage, epochs, epochs)   # early stop: close the bar
                break
    module.load_state_dict(best_state)
    module.eval()
    return {"best_ndcg@10": best, "epochs": history}


def train_prototype(dataset: Dataset, split: Split, scenario: Scenario, progress: Progress) -> tuple[PrototypeModel, dict]:
    spec, tr = scenario.model, scenario.train
    torch.manual_seed(scenario.seed)
    gen = torch.Generator().manual_seed(scenario.seed)
    model = PrototypeModel(dataset.num_items, spec, scenario.seed)
    seqs = [dataset.sequences[u] for u in split.train_users] + [dataset.sequences[u][:-1] for u in split.valid_users]
    chunks = training_chunks(seqs, spec.max_len)
    data = _pad_right(chunks, spec.max_len + 1)                     # (C, L + 1)
    val = build_validation(dataset, split.valid_users, scenario)
    opt = torch.optim.Adam(model.parameters(), lr=tr.lr)

    def run_epoch() -> None:
        model.train()
        order = torch.randperm(len(data), generator=gen)
        for step in range(0, len(data), tr.batch_size):
            batch = data[order[step: step + tr.batch_size]]
            inp, tgt = batch[:, :-1], batch[:, 1:]                  # (B, L) each
            u = model.user_vectors(inp)                             # (B, L, D)
            keep = tgt > 0
            loss = _sampled_ce(u[keep], tgt[keep], model.encoder.item_emb.weight, tr.sampled_negatives, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()

    meta = _fit("prototype", tr.epochs, tr.patience, run_epoch, lambda: validate_prototype(model, val), model, progress)
    return model, meta


@torch.no_grad()
def editor_samples(model: PrototypeModel, seqs: list[np.ndarray], scenario: Scenario):
    """(h before target, window before target, target) for every target position t >= 1."""
    L, W = scenario.model.max_len, scenario.persona.window
    hs, wins, tgts = [], [], []
    for chunk_start in range(0, len(seqs), 256):
        group = seqs[chunk_start: chunk_start + 256]
        inputs = _pad_right([s[:-1][-L:] for s in group], L)
        h_all = model.encoder(inputs)                               # (B, L, D)
        for i, seq in enumerate(group):
            n_in = min(len(seq) - 1, L)
            offset = len(seq) - 1 - n_in                            # items dropped on the left
            for p in range(n_in):                                   # h at input position p predicts seq[offset + p + 1]
                t = offset + p + 1
                hs.append(h_all[i, p])
                wins.append(windows_before(seq, t, W))
                tgts.append(seq[t])
    return torch.stack(hs), _pad_right(wins, W), torch.tensor(np.asarray(tgts))


def train_editor(model: PrototypeModel, dataset: Dataset, split: Split, scenario: Scenario,
                 progress: Progress) -> tuple[ParameterEditor, dict]:
    tr = scenario.train
    torch.manual_seed(scenario.seed + 1)
    gen = torch.Generator().manual_seed(scenario.seed + 1)
    for p in model.parameters():
        p.requires_grad_(False)
    editor = ParameterEditor(scenario.model.hidden, scenario.persona)
    seqs = [dataset.sequences[u] for u in split.train_users] + [dataset.sequences[u][:-1] for u in split.valid_users]
    h, wins, tgts = editor_samples(model, seqs, scenario)
    val = build_validation(dataset, split.valid_users, scenario)
    emb = model.encoder.item_emb.weight
    proto = {k: v.detach() for k, v in model.head_params().items()}
    opt = torch.optim.Adam(editor.parameters(), lr=tr.editor_lr)

    def run_epoch() -> None:
        editor.train()
        order = torch.randperm(len(tgts), generator=gen)
        for step in range(0, len(tgts), tr.batch_size):
            idx = order[step: step + tr.batch_size]
            w = wins[idx]
            params = apply_edits(proto, editor.edits(emb[w], w > 0))
            loss = _sampled_ce(head_forward(h[idx], params), tgts[idx], emb, tr.sampled_negatives, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()

    meta = _fit("editor", tr.editor_epochs, tr.patience, run_epoch, lambda: validate_editor(model, editor, val),
                editor, progress)
    return editor, dict(meta, samples=int(len(tgts)))
