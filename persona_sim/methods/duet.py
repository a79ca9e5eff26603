"""DUET [37]: a cloud hypernetwork generates the device's adaptive layers outright from its window — no
prototype to edit, no clip. Trained on the cloud's data with Θb frozen, like Persona's editor; it shares
that editor's window encoder (DUET runs a GRU over the window), so the comparison isolates generating
the layers from editing a prototype under a clip."""
from ..model.adaptation import generate
from .base import Method

METHOD = Method(name="duet", label="DUET", where="cloud", uses_generator=True, adapt=generate)
