"""On-device fine-tuning (the paper's "Fine-tune" row, after ULMFiT [19] as the paper cites it): Adam steps
on the device's latest labelled interactions, next-item loss, every layer but the shared item table by
default. The device predicts with its old layers until the steps are done. The defaults (20 Adam steps at
lr 1e-3 over the device's rows) are those of the authors' fine-tuning baseline in their public code: 20
epochs over a user's rows, Adam at 1e-3, batches of 1,024 rows, so one step per epoch."""
from ..scenario.schema import Scenario
from .base import DevicePart, Method


def _part(s: Scenario) -> DevicePart:
    f = s.baselines.finetune
    return DevicePart(labelled=True, window=f.window, steps=f.steps, lr=f.lr, part=f.layers,
                      objective="next-item", negatives=s.baselines.negatives)


METHOD = Method(name="finetune", label="Fine-tune", where="device", device=_part)
