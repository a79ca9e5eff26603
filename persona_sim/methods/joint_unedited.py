"""An ablation of ``persona-joint``: its jointly trained Θb with the global prototype's Θc, never edited. Against
``persona-joint`` it shows how much of the joint method's score is the edit and how much is its own backbone
(which static, the separately trained prototype, does not share). Offline only."""
from ..model.adaptation import PersonaModels, unedited
from .base import Method

METHOD = Method(name="joint-unedited", label="joint Θb, no edit", where="none", uses_joint=True, offline_only=True,
                adapt=unedited, predicts_with=PersonaModels.jointly_trained)
