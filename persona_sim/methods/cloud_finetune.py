"""Cloud fine-tuning: the device uploads its window; the cloud fine-tunes a copy of Θc on it (Adam,
next-item loss over the window's own items, Θb's output from the window alone) and sends the full
layers back. The "just do it in the cloud" alternative; its cloud cost is charged per step."""
from __future__ import annotations

import torch

from ..model.adaptation import Adapted, AdaptFn, PersonaModels
from ..model.local import local_data
from ..scenario.schema import Scenario
from .base import DevicePart, Method


def _part(s: Scenario) -> DevicePart:
    c = s.baselines.cloud_finetune
    return DevicePart(labelled=True, window=s.persona.window, steps=c.steps, lr=c.lr, part="adaptive",
                      objective="next-item", negatives=s.baselines.negatives)


def _configure(s: Scenario) -> AdaptFn:
    part = _part(s)

    def adapt(models: PersonaModels, windows: torch.Tensor) -> Adapted:
        known = [w[w > 0].numpy() for w in windows]
        gen = torch.Generator().manual_seed(s.seed)       # the same window gets the same layers
        learned = part.learn(models, local_data(known, s.model.max_len, part.window, labelled=True), gen)
        B = len(windows)
        return Adapted(learned.head, torch.zeros(B, dtype=torch.long), torch.zeros(B))
    return adapt


METHOD = Method(name="cloud-finetune", label="Cloud fine-tune", where="cloud", configure=_configure,
                cloud_steps=lambda s: s.baselines.cloud_finetune.steps)
