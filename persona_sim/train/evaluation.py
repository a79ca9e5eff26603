"""Ranking prediction cases: model selection and the offline protocols (DESIGN §3).

Each case ranks the true next item against ``eval.negatives`` items sampled
uniformly from those the user never interacted with (seeded per purpose), with
the device's real-time window (its last W items) as the editor's input. Model
selection (validation cases) and the offline test both go through ``evaluate``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..data.dataset import Dataset
from ..data.split import Cases
from ..methods.base import DevicePart
from ..model.adaptation import AdaptFn, PersonaModels
from ..model.batching import encode_last, pad_right
from ..model.local import local_data
from ..model.metrics import METRICS, rank_metrics, sample_negatives
from ..model.networks import adaptive_forward
from ..model.ondevice import learned_vectors
from ..scenario.schema import Scenario

CHUNK = 256          # cases per adapt call: persona-m holds (N_M, CHUNK, edit size) edits at once
DEVICE_CHUNK = 128   # devices per on-device learning call: each holds its own parameters and Adam state

VALID_PURPOSE, TEST_PURPOSE = 0x7A11, 0x7E57


@dataclass
class CaseSet:
    users: np.ndarray           # (N,) whose event each case is
    histories: list[np.ndarray]
    windows: torch.Tensor       # (N, W) the last W items of each history, left-aligned, 0-padded
    candidates: torch.Tensor    # (N, 1 + K) the true item first


def build_cases(dataset: Dataset, cases: Cases, scenario: Scenario, purpose: int) -> CaseSet:
    rng = np.random.default_rng([scenario.seed, purpose])
    W, K = scenario.persona.window, scenario.eval.negatives
    cands = np.empty((len(cases), 1 + K), dtype=np.int64)
    cands[:, 0] = cases.targets
    for i, u in enumerate(cases.users):
        cands[i, 1:] = sample_negatives(rng, dataset.num_items, dataset.sequences[u], 1, K)[0]
    return CaseSet(cases.users, cases.histories, pad_right([h[-W:] for h in cases.histories], W), torch.from_numpy(cands))


@torch.no_grad()
def evaluate(models: PersonaModels, adapt: AdaptFn, cases: CaseSet, max_len: int) -> dict[str, np.ndarray]:
    """Per-case metrics (HR@5/10, NDCG@5/10, AUC, rank), the scores (N, 1 + K) they come from, and the
    prototype each case was given by ``adapt`` (a method's, or one of the primitives in ``model.adaptation``)."""
    models.shared.eval()
    h = encode_last(models.shared, cases.histories, max_len)                 # (N, D)

    def vectors(sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        adapted = adapt(models, cases.windows[sl])
        return adaptive_forward(h[sl], adapted.params), adapted.prototype    # (b, D), (b,)
    return _scored(models, cases, vectors)


@torch.no_grad()     # torch.func.grad inside still differentiates
def evaluate_on_device(models: PersonaModels, part: DevicePart, cases: CaseSet, max_len: int, seed: int,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """``evaluate`` for a method that learns on the device: every case's device takes ``part``'s gradient
    steps on its own history (its last max_len items) before the prediction, DEVICE_CHUNK devices per
    vmapped call, in order of history length (so a call pads little); results in the cases' order."""
    order = np.argsort([len(h) for h in cases.histories], kind="stable")
    if not (order[1:] > order[:-1]).all():
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        out = evaluate_on_device(models, part, _subset(cases, order), max_len, seed, progress)
        return {k: v[back] for k, v in out.items()}
    models.shared.eval()
    h = encode_last(models.shared, cases.histories, max_len)                 # (N, D): Θb before any learning

    def vectors(sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        known = cases.histories[sl]
        gen = torch.Generator().manual_seed(seed * 1_000_003 + sl.start)
        learned = part.learn(models, local_data(known, max_len, part.window, part.labelled), gen)
        if learned.shared is None:
            u = adaptive_forward(h[sl], learned.head)                        # (b, D)
        else:
            inputs = [k[-max_len:] for k in known]
            u = learned_vectors(models, learned, pad_right(inputs), torch.tensor([len(r) - 1 for r in inputs]))
        if progress is not None:
            progress(min(sl.stop, len(h)), len(h))
        return u, torch.zeros(len(u), dtype=torch.long)
    return _scored(models, cases, vectors, DEVICE_CHUNK)


def _subset(cases: CaseSet, idx: np.ndarray) -> CaseSet:
    t = torch.from_numpy(idx)
    return CaseSet(cases.users[idx], [cases.histories[i] for i in idx], cases.windows[t], cases.candidates[t])


def _scored(models: PersonaModels, cases: CaseSet, vectors, chunk: int = CHUNK) -> dict[str, np.ndarray]:
    emb = models.item_emb
    parts, protos = [], []
    for start in range(0, len(cases.candidates), chunk):
        sl = slice(start, start + chunk)
        u, proto = vectors(sl)
        parts.append(torch.einsum("bd,bkd->bk", u, emb[cases.candidates[sl]]).numpy())   # (b, 1 + K)
        protos.append(proto.numpy())
    scores = np.concatenate(parts)
    out = rank_metrics(scores)
    out["scores"] = scores
    out["prototype"] = np.concatenate(protos)
    return out


def mean_metrics(per_case: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(per_case[k].mean()) for k in METRICS}
