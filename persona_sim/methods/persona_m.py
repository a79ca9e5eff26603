"""Persona (m): every group editor edits its group prototype on the device's window in one batched call
(Eq. 11); the device gets the group needing the smallest edit (Eq. 12)."""
from ..model.adaptation import edit_groups
from .base import Method

METHOD = Method(name="persona-m", label="Persona (m)", where="cloud", uses_groups=True, adapt=edit_groups)
