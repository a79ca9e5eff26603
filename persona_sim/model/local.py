"""What a device learns from: its own interactions so far.

On-device baselines train on the device's latest items, the way the model was
trained: the encoder is causal with positions counted from the first item, so
one forward pass over the last ``max_len`` items gives the prediction after
every prefix. A labelled row pairs each position with the item that followed
it; an unlabelled row (test-time adaptation) only says which positions'
predictions to use, the newest one included.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .batching import pad_right


@dataclass
class LocalData:
    seqs: torch.Tensor       # (B, L) each device's latest items, right-padded: the model's input
    targets: torch.Tensor    # (B, L) the item that followed each input position (0: unknown)
    mask: torch.Tensor       # (B, L) bool, the positions the loss uses (the last ``window`` of each row)

    @property
    def positions(self) -> torch.Tensor:
        """(B,) positions each row's loss uses."""
        return self.mask.sum(1)


def local_data(known: list[np.ndarray], max_len: int, window: int, labelled: bool) -> LocalData:
    """Each device's items so far (oldest first) -> its training rows.

    labelled:   input = known[:-1] (its last max_len), target at position j = the item after it;
    unlabelled: input = known (its last max_len), no targets.
    The last ``window`` positions of each row are used (fewer if the row is shorter).
    """
    inputs = [k[:-1][-max_len:] if labelled else k[-max_len:] for k in known]
    seqs = pad_right(inputs, max(1, max((len(r) for r in inputs), default=1)))
    targets = torch.zeros_like(seqs)
    mask = torch.zeros(seqs.shape, dtype=torch.bool)
    for i, (k, r) in enumerate(zip(known, inputs)):
        n = len(r)
        if labelled and n:
            targets[i, :n] = torch.from_numpy(np.asarray(k[-n:], dtype=np.int64))
        mask[i, max(0, n - window): n] = True
    return LocalData(seqs, targets, mask)
