"""The scenario: the typed, validated description of a whole run.

``schema`` holds the pydantic models (every key, its default and its bounds)
and ``files`` reads YAML files, ``--set`` overrides and sweeps into them.
Everything above receives a fully defaulted ``Scenario``. Imports only
``persona_sim.errors``.
"""
