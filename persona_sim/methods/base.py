"""The interface every adaptation method presents to the rest of persona-sim."""
from __future__ import annotations

from dataclasses import dataclass

from ..model.adaptation import AdaptFn
from ..scenario.schema import PersonaSpec


@dataclass(frozen=True)
class Method:
    """One adaptation method. The runner, the cloud, the simulation and the reports ask these
    attributes; none of them branches on a method's name."""

    name: str            # as a scenario spells it
    label: str           # as the paper's tables name it
    asks_cloud: bool     # a device sends its window to the cloud for new adaptive layers
    uses_groups: bool    # needs Persona (m)'s group prototypes in the model bundle
    adapt: AdaptFn       # the adaptive layers the method gives each device for its window

    def prototypes(self, persona: PersonaSpec) -> int:
        """Prototype editors one request is charged for in the cloud's cost model (P)."""
        return persona.prototypes if self.uses_groups else 1
