"""The interface every adaptation method presents to the rest of persona-sim."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from ..model import flops
from ..model.adaptation import AdaptFn, PersonaModels
from ..model.local import LocalData
from ..model.ondevice import Learned, learn
from ..scenario.schema import Scenario


@dataclass(frozen=True)
class DevicePart:
    """What a method does on the device for one adaptation: real gradient steps on its own rows."""

    labelled: bool           # learns from the items that followed (False: from its own predictions only)
    window: int              # the latest positions it learns from
    steps: int
    lr: float
    part: str                # what it trains (``model.ondevice``)
    objective: str           # what it minimises (``model.ondevice``)
    negatives: int           # sampled negatives of the next-item loss
    rank: int = 4            # patch rank, for part "patch"

    def learn(self, models: PersonaModels, data: LocalData, gen: torch.Generator) -> Learned:
        negatives = torch.randint(1, models.item_emb.shape[0], (self.negatives,), generator=gen)
        return learn(models, data, self.part, self.objective, self.steps, self.lr, negatives, gen, self.rank)

    def step_share(self, scenario: Scenario, num_items: int) -> float:
        """One of its steps as a share of the reference step a device profile's ``finetune_step_ms`` times
        (``flops.reference_step_flops``). A device runs a graph of fixed shape, as on-device runtimes do: every
        row is ``max_len`` items, shorter histories padded, so the share depends on what the method trains,
        at how many positions and against how many items, not on the device's history. A step that scores
        the whole catalogue (entropy) costs accordingly more than one that scores sampled negatives."""
        m = scenario.model
        cands = num_items if self.objective == "entropy" else 1 + self.negatives
        step = flops.step_flops(m, self.part, m.max_len, min(self.window, m.max_len), cands)
        return step / flops.reference_step_flops(m, scenario.baselines.negatives)


@dataclass(frozen=True)
class Method:
    """One adaptation method. The runner, the cloud, the simulation and the reports ask these
    attributes; none of them branches on a method's name."""

    name: str                                   # as a scenario spells it
    label: str                                  # as the paper's tables name it
    where: Literal["none", "device", "cloud"]   # where it adapts: nowhere, on the device, in the cloud
    uses_groups: bool = False                   # needs Persona (m)'s group prototypes in the model bundle
    uses_tuned_groups: bool = False             # needs groups whose PMs were fine-tuned (the paper's)
    uses_generator: bool = False                # needs DUET's generator in the model bundle
    uses_joint: bool = False                    # needs the jointly trained Θb and editor in the model bundle
    uses_joint_groups: bool = False             # needs groups built on those (``persona-joint-m``)
    offline_only: bool = False                  # `eval` only: its devices would run a Θb of their own
    predicts_with: Callable[[PersonaModels], PersonaModels] | None = None   # models other than the bundle's
    adapt: AdaptFn | None = None                # cloud: the adaptive layers it gives each device for its window
    configure: Callable[[Scenario], AdaptFn] | None = None      # cloud, when the layers depend on settings
    device: Callable[[Scenario], DevicePart] | None = None      # device: its on-device part
    cloud_steps: Callable[[Scenario], int] | None = None        # cloud: fine-tuning steps a request runs

    @property
    def asks_cloud(self) -> bool:
        """A device sends its window to the cloud for new adaptive layers."""
        return self.where == "cloud"

    def adapter(self, scenario: Scenario) -> AdaptFn:
        """(models, windows (B, W)) -> each device's adaptive layers, as the cloud computes them."""
        if self.configure is not None:
            return self.configure(scenario)
        if self.adapt is None:
            raise ValueError(f"method {self.name!r} does not adapt from a window")
        return self.adapt

    def prototypes(self, scenario: Scenario) -> int:
        """Prototype editors one request is charged for in the cloud's cost model (P)."""
        if not self.asks_cloud or self.cloud_steps is not None:
            return 0
        return scenario.persona.prototypes if self.uses_groups or self.uses_joint_groups else 1

    def steps(self, scenario: Scenario) -> int:
        """Fine-tuning steps one request is charged for in the cloud's cost model (S)."""
        return self.cloud_steps(scenario) if self.cloud_steps is not None else 0
