"""DCCL [66], its on-device part: MetaPatch, a small patch learned on the device while the base model stays
frozen. Simplified here to a low-rank patch ΔW = A·B on each adaptive layer, trained on the device's latest
labelled interactions; DCCL's cloud-side MoMoDistill (distilling the patches back into the cloud model)
is not modelled."""
from ..scenario.schema import Scenario
from .base import DevicePart, Method


def _part(s: Scenario) -> DevicePart:
    d = s.baselines.dccl
    return DevicePart(labelled=True, window=d.window, steps=d.steps, lr=d.lr, part="patch",
                      objective="next-item", negatives=s.baselines.negatives, rank=d.rank)


METHOD = Method(name="dccl", label="DCCL", where="device", device=_part)
