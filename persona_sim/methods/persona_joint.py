"""Persona (s) as the paper's public code trains it: a fresh backbone Θb and the Parameter Editor trained
together from scratch, end to end, editing the global prototype's Θc, which stays a fixed offset. The static
model it is compared with is the separately trained prototype, as in that code. Offline only (``eval``):
its devices would run a Θb of their own, which the simulated devices do not model."""
from ..model.adaptation import PersonaModels, edit_global
from .base import Method

METHOD = Method(name="persona-joint", label="Persona (s) joint", where="cloud", uses_joint=True,
                offline_only=True, adapt=edit_global, predicts_with=PersonaModels.jointly_trained)
