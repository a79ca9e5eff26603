"""Ranking prediction cases: model selection and the offline protocols (DESIGN §3).

Each case ranks the true next item against ``eval.negatives`` items sampled
uniformly from those the user never interacted with (seeded per purpose), with
the device's real-time window (its last W items) as the editor's input. Model
selection (validation cases) and the offline test both go through ``evaluate``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import Dataset
from ..data.split import Cases
from ..model.adaptation import AdaptFn, PersonaModels
from ..model.batching import encode_last, pad_right
from ..model.metrics import METRICS, rank_metrics, sample_negatives
from ..model.networks import adaptive_forward
from ..scenario.schema import Scenario

CHUNK = 256   # cases per adapt call: persona-m holds (N_M, CHUNK, edit size) edits at once

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
    emb = models.item_emb
    parts, protos = [], []
    for start in range(0, len(h), CHUNK):
        sl = slice(start, start + CHUNK)
        adapted = adapt(models, cases.windows[sl])
        u = adaptive_forward(h[sl], adapted.params)                          # (b, D)
        parts.append(torch.einsum("bd,bkd->bk", u, emb[cases.candidates[sl]]).numpy())   # (b, 1 + K)
        protos.append(adapted.prototype.numpy())
    scores = np.concatenate(parts)
    out = rank_metrics(scores)
    out["scores"] = scores
    out["prototype"] = np.concatenate(protos)
    return out


def mean_metrics(per_case: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(per_case[k].mean()) for k in METRICS}
