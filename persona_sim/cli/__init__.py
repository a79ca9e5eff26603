"""The ``persona-sim`` command line: argument parsing and the commands only.
The only place that prints errors and picks exit codes; ``persona-sim cloud``
and ``persona-sim devices`` come from the node packages through the
``persona_sim.commands`` entry-point group, so the core never imports them.
"""
from .app import main

__all__ = ["main"]
