"""persona-sim: a gRPC streaming edge-cloud simulator for Persona (MM '25).

The Python API (see ``persona_sim.api``)::

    import persona_sim
    summary = persona_sim.run("scenarios/quickstart.yaml", out="runs/q")
    run = persona_sim.load_run("runs/q")

The subpackages, lowest first (each imports only those below it; a test
enforces it with import-linter): ``errors``/``progress``, ``scenario``,
``data`` | ``wire``, ``model``, ``methods``, ``train``, ``sim`` | ``report``,
``jobs``, ``cli`` | ``api``. ``import persona_sim`` stays light: the API's
modules load on first use.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("persona-sim")
except PackageNotFoundError:   # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "load_run", "run"]


def __getattr__(name: str):
    if name in ("run", "load_run"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'persona_sim' has no attribute {name!r}")
