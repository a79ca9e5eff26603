"""On-device fine-tuning (the paper's "Fine-tune" row, after ULMFiT [19] as the paper cites it): Adam steps
on the device's latest labelled interactions, next-item loss, every layer but the shared item table by
default. The device predicts with its old layers until the steps are done."""
from ..scenario.schema import Scenario
from .base import DevicePart, Method


def _part(s: Scenario) -> DevicePart:
    f = s.baselines.finetune
    return DevicePart(labelled=True, window=f.window, steps=f.steps, lr=f.lr, part=f.layers,
                      objective="next-item", negatives=s.baselines.negatives)


METHOD = Method(name="finetune", label="Fine-tune", where="device", device=_part)
