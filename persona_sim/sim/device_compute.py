"""How long each device's processor takes: apply an edit, run one prediction, run one fine-tuning step.

``fixed`` gives every device the scenario's numbers. A named profile draws each
device's times from a log-normal around that class of phone's medians, from a
generator spawned from (seed, device), so a device's speed never depends on
which process simulates it. The profile medians are typical values chosen for
illustration, not measurements of particular phones; use ``fixed`` to model a
device you have measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..scenario.schema import ComputeSpec

SPREAD = 0.3   # σ of log(time) across devices of one profile


@dataclass(frozen=True)
class DeviceCompute:
    apply_us: int
    infer_us: int
    finetune_step_us: int


PROFILES = {   # medians in ms: apply an edit, one prediction, one whole-model training step (flops.reference_step_flops)
    "flagship": (1.0, 2.0, 15.0),
    "midrange": (2.5, 6.0, 40.0),
    "lowend": (6.0, 15.0, 120.0),
}


def _us(ms: float) -> int:
    return int(round(ms * 1000))


def device_compute(spec: ComputeSpec, seed: int, index: int) -> DeviceCompute:
    if spec.profile == "fixed":
        return DeviceCompute(_us(spec.apply_ms), _us(spec.infer_ms), _us(spec.finetune_step_ms))
    z = np.random.default_rng([seed, index, 6]).standard_normal(3)
    return DeviceCompute(*(_us(ms * math.exp(SPREAD * zi)) for ms, zi in zip(PROFILES[spec.profile], z)))
