"""Scoring devices' predictions in batches: across stretches, devices and rounds.

A device predicts each event with the adaptive layers Θc it holds then. Nothing in the
simulation depends on the scores, so a stretch of events predicted with one set of layers is
queued (``Scorer.add``) and scored with thousands of others' events at once: each stretch's
layers multiply exactly its own rows (the matmul it would run alone), and everything else —
GELU, the candidates' dot products, the metrics — is row-wise, so an event's numbers never
depend on which others share its batch (``tests/test_models.py`` checks the bits).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..model.metrics import rank_metrics

BATCH_EVENTS = 4096   # queued events that trigger scoring
GATHER_ROWS = 512     # events whose candidates' embeddings, (rows, 1 + K, D), are gathered at once


@dataclass
class Stretch:
    """Events [first, first + n) of one device, predicted with one set of layers."""

    device_id: str
    first: int
    h: np.ndarray              # (n, D) float32: Θb's output before each event
    cands: np.ndarray          # (n, 1 + K): the true next item, then its sampled negatives
    times: np.ndarray          # (n,) virtual time of each event
    params: dict[str, np.ndarray]   # the adaptive layers, float32
    edit_seq: int              # the edit they came from (0: the prototype's own)


def gelu(x: np.ndarray) -> np.ndarray:
    # Exact (erf) GELU, as torch.nn.functional.gelu computes it (torch's erf on the same float32 array).
    return 0.5 * x * (1.0 + torch.erf(torch.from_numpy(x * np.float32(1 / math.sqrt(2.0)))).numpy())


def layer_names(params: dict[str, np.ndarray]) -> list[str]:
    """The adaptive layers in forward order: 'head.0', 'head.1', ..."""
    return sorted((k[: -len(".weight")] for k in params if k.endswith(".weight")),
                  key=lambda name: int(name.rpartition(".")[2]))


def user_vectors(stretches: list[Stretch]) -> np.ndarray:
    """Θc on every stretch's rows -> (N, D): each stretch's own affine maps, GELU between layers, as
    ``models.adaptive_forward`` computes them."""
    names = layer_names(stretches[0].params)
    bounds = np.cumsum([0] + [len(s.h) for s in stretches])
    x = np.concatenate([s.h for s in stretches])
    for i, name in enumerate(names):
        w, b = f"{name}.weight", f"{name}.bias"
        x = np.concatenate([x[lo:hi] @ s.params[w] + s.params[b]
                            for s, lo, hi in zip(stretches, bounds[:-1], bounds[1:])])
        if i < len(names) - 1:
            x = gelu(x)
    return x


def scores(stretches: list[Stretch], item_emb: np.ndarray) -> np.ndarray:
    """(N, 1 + K) scores of every event's true item (first) and its negatives."""
    u = user_vectors(stretches)
    cands = np.concatenate([s.cands for s in stretches])
    out = np.empty(cands.shape, dtype=np.float32)
    for lo in range(0, len(cands), GATHER_ROWS):
        hi = lo + GATHER_ROWS
        out[lo:hi] = np.einsum("nkd,nd->nk", item_emb[cands[lo:hi]], u[lo:hi])
    return out


class Scorer:
    """Queues stretches and scores them in batches, handing ``emit`` the prediction rows
    (``report.results.PREDICTION_COLUMNS``)."""

    def __init__(self, method: str, item_emb: np.ndarray, emit: Callable[[list[tuple]], None]):
        self.method, self.item_emb, self.emit = method, item_emb, emit
        self.queue: list[Stretch] = []
        self.events = 0

    def add(self, stretch: Stretch) -> None:
        self.queue.append(stretch)
        self.events += len(stretch.h)
        if self.events >= BATCH_EVENTS:
            self.flush()

    def flush(self) -> None:
        if not self.queue:
            return
        batch, self.queue, n = self.queue, [], self.events
        self.events = 0
        m = rank_metrics(scores(batch, self.item_emb))
        devices, seqs, events = [], [], []
        for s in batch:
            devices += [s.device_id] * len(s.h)
            seqs += [s.edit_seq] * len(s.h)
            events += range(s.first, s.first + len(s.h))
        self.emit(list(zip(
            [self.method] * n, devices, events, np.concatenate([s.times for s in batch]).tolist(),
            np.concatenate([s.cands[:, 0] for s in batch]).tolist(), seqs, m["rank"].tolist(), m["hr@5"].tolist(),
            m["hr@10"].tolist(), m["ndcg@5"].tolist(), m["ndcg@10"].tolist(), m["auc"].tolist())))
