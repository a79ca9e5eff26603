"""Persona (s): the global Parameter Editor edits the global prototype model (Eq. 6), clipped (Eq. 8)."""
from ..model.adaptation import edit_global
from .base import Method

METHOD = Method(name="persona-s", label="Persona (s)", where="cloud", adapt=edit_global)
