"""Persona (m) on the jointly trained models (``persona-joint``): the groups built from the joint editor as
Persona (m)'s are from the global one (``persona.groups``: the paper's or the authors' variant, chosen on
validation), over the joint Θb. With the authors' groups this is Persona (m) as their public code builds it.
Offline only, like ``persona-joint``."""
from ..model.adaptation import PersonaModels, edit_groups
from .base import Method

METHOD = Method(name="persona-joint-m", label="Persona (m) joint", where="cloud", uses_joint=True,
                uses_joint_groups=True, offline_only=True, adapt=edit_groups,
                predicts_with=PersonaModels.jointly_trained)
