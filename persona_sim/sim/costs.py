"""One adaptation's modelled time on a typical device, without running the simulation: the offline
evaluation's "time consumption" column (the paper's Table 1).

The same cost models as the simulation, at their medians and with nothing shared or queued:
  device methods   steps × the profile's fine-tuning step × the step's share of the reference step
                   (``DevicePart.step_share``): all compute
  cloud methods    cloud compute of a batch of one + apply (compute), and upload + download on the
                   scenario's median link (propagation, then transmission of the real encoded sizes; no
                   jitter, no loss)
The paper's "time consumption" column is the compute part: its Persona and DUET rows are the same
10.78 ms, the editor's forward, with no network in it.
A run measures the real thing, with queueing, sharing, jitter and loss: ``persona-sim run``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..methods import Method
from ..scenario.schema import NetworkSpec, Scenario
from ..wire.codec import EditEncoder, request_wire_bytes
from ..wire.messages import AdaptRequest, EditResult
from .device_compute import PROFILES as DEVICE_PROFILES
from .netsim import PROFILES as LINK_PROFILES


def _median_compute_ms(scenario: Scenario) -> tuple[float, float]:
    """(apply_ms, finetune_step_ms) of the median device."""
    c = scenario.devices.compute
    if c.profile == "fixed":
        return c.apply_ms, c.finetune_step_ms
    apply_ms, _, step_ms = DEVICE_PROFILES[c.profile]
    return apply_ms, step_ms


def _median_link(spec: NetworkSpec) -> tuple[float, float, float]:
    """(up Mbit/s, down Mbit/s, one-way delay ms) of the median link."""
    if spec.profile == "fixed":
        return spec.uplink_mbps, spec.downlink_mbps, spec.delay_ms
    p = LINK_PROFILES[spec.profile]
    return p.up_mbps, p.down_mbps, p.delay_ms


def _transfer_ms(nbytes: int, mbps: float, delay_ms: float) -> float:
    return delay_ms + math.ceil(nbytes * 8 / mbps) / 1000.0


@dataclass(frozen=True)
class ModelledCost:
    """One adaptation's median modelled time, split as the paper's time column and a run report it."""

    compute_ms: float      # device training, or cloud compute + applying the reply: the paper's "time consumption"
    network_ms: float      # upload + download (propagation and transmission); 0 for device methods

    @property
    def total_ms(self) -> float:
        return self.compute_ms + self.network_ms


def modelled_cost(method: Method, scenario: Scenario, shapes: dict[str, tuple[int, ...]],
                  num_items: int) -> ModelledCost | None:
    """The median modelled time of one adaptation by ``method`` (None: it never adapts).

    ``shapes``: the adaptive layers' parameter shapes (what a cloud reply carries); ``num_items``: the
    catalogue's size (what a step that scores every item pays for)."""
    apply_ms, step_ms = _median_compute_ms(scenario)
    if method.device is not None:
        part = method.device(scenario)
        return ModelledCost(part.steps * step_ms * part.step_share(scenario, num_items), 0.0)
    if not method.asks_cloud:
        return None
    W = scenario.persona.window
    req = AdaptRequest("dev-000000", 1, 0, method.name, tuple(range(1, W + 1)))
    params = {k: np.zeros(s, dtype=np.float32) for k, s in shapes.items()}
    probe = EditResult("dev-000000", 1, 0, params, 0.0, 0)
    EditEncoder(scenario.cloud.edit_dtype, 0.0, params).encode(probe)
    down = probe.wire_bytes
    c = scenario.cloud
    compute_ms = (c.base_ms + c.per_request_ms + method.prototypes(scenario) * c.per_prototype_ms
                  + method.steps(scenario) * c.per_step_ms)
    up_mbps, down_mbps, delay_ms = _median_link(scenario.network)
    return ModelledCost(compute_ms + apply_ms, _transfer_ms(request_wire_bytes(req), up_mbps, delay_ms)
                        + _transfer_ms(down, down_mbps, delay_ms))
