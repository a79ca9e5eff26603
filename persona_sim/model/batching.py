"""Padding and length-bucketed batches of item sequences.

Sequences are right-padded, and every encoder is causal with positions counted
from the first item, so cutting a batch's trailing padding columns changes no
real position's output. Batching sequences of similar length therefore saves
most of the work on short-sequence data (Amazon Beauty: 9 items per user on
average, padded to 50).
"""
from __future__ import annotations

import numpy as np
import torch

from .networks import SharedLayers

ENCODE_BATCH = 512


def pad_right(rows: list[np.ndarray], length: int | None = None) -> torch.Tensor:
    """(N, length) int64, each row's items first then zeros; length defaults to the longest row."""
    length = max((len(r) for r in rows), default=1) if length is None else length
    out = np.zeros((len(rows), max(1, length)), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def trim(batch: torch.Tensor) -> torch.Tensor:
    """Drop the trailing all-padding columns of a right-padded (B, L) batch."""
    used = int((batch != 0).any(0).nonzero().max()) + 1 if (batch != 0).any() else 1
    return batch[:, :used]


def length_batches(lengths: np.ndarray, batch_size: int, gen: torch.Generator, pool: int = 50) -> list[torch.Tensor]:
    """Shuffled batches of indices whose rows have similar lengths.

    Rows are shuffled, cut into pools of ``pool`` batches, sorted by length
    within each pool and batched; then the batch order is shuffled.
    """
    order = torch.randperm(len(lengths), generator=gen)
    lengths_t = torch.as_tensor(lengths)
    batches = []
    for start in range(0, len(order), batch_size * pool):
        idx = order[start: start + batch_size * pool]
        idx = idx[torch.argsort(lengths_t[idx], stable=True)]
        batches.extend(idx.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen)]


def _by_length(histories: list[np.ndarray]):
    """Index groups of up to ENCODE_BATCH histories, sorted by length (deterministic)."""
    order = np.argsort([len(h) for h in histories], kind="stable")
    for start in range(0, len(order), ENCODE_BATCH):
        yield order[start: start + ENCODE_BATCH]


@torch.no_grad()
def encode_last(shared: SharedLayers, histories: list[np.ndarray], max_len: int) -> torch.Tensor:
    """Θb's output after each whole history (its last max_len items) -> (N, D)."""
    out = torch.empty(len(histories), shared.item_emb.shape[1])
    for idx in _by_length(histories):
        rows = [histories[i][-max_len:] for i in idx]
        h = shared(pad_right(rows))                                     # (b, l, D)
        last = torch.tensor([len(r) - 1 for r in rows])
        out[torch.from_numpy(idx)] = h[torch.arange(len(rows)), last]
    return out


@torch.no_grad()
def encode_prefixes(shared: SharedLayers, sequences: list[np.ndarray], max_len: int):
    """For every target position t >= 1 of every sequence: Θb's output after items[:t] (at most max_len of them).

    Returns (h (N, D), sequence index (N,), t (N,)). Positions whose prefix is
    longer than max_len use the output at the end of the last max_len items
    before the target, as training saw them.
    """
    hs, seq_idx, ts = [], [], []
    for idx in _by_length(sequences):
        rows = [sequences[i][:-1][-max_len:] for i in idx]
        h = shared(pad_right(rows))                                     # (b, l, D)
        for r, i in enumerate(idx):
            n = len(rows[r])
            offset = len(sequences[i]) - 1 - n                          # items dropped on the left
            hs.append(h[r, :n])
            seq_idx.append(np.full(n, i))
            ts.append(offset + 1 + np.arange(n))
    order = np.lexsort((np.concatenate(ts), np.concatenate(seq_idx)))   # by sequence, then position
    return torch.cat(hs)[torch.from_numpy(order)], np.concatenate(seq_idx)[order], np.concatenate(ts)[order]
