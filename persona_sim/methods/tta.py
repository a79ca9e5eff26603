"""Test-time adaptation (the paper's "TTA" row, [57]), as Tent does it: a few Adam steps minimising the
entropy of the device's own predictions at its latest positions, on the encoder's normalisation
parameters (or Θc); no labels."""
from ..scenario.schema import Scenario
from .base import DevicePart, Method


def _part(s: Scenario) -> DevicePart:
    t = s.baselines.tta
    return DevicePart(labelled=False, window=t.window, steps=t.steps, lr=t.lr, part=t.layers,
                      objective="entropy", negatives=s.baselines.negatives)


METHOD = Method(name="tta", label="TTA", where="device", device=_part)
