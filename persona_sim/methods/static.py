"""No adaptation: every device keeps the global prototype's adaptive layers (the paper's "–" row)."""
from ..model.adaptation import unedited
from .base import Method

METHOD = Method(name="static", label="– (static)", where="none", adapt=unedited)
