"""Interaction data: the readers for the formats people hold, item attributes,
the catalogue of named datasets, the embedded synthetic generator, the
CSR-backed ``Dataset``, format conversion, and the split into training users
and simulated devices.

May import ``persona_sim.scenario`` and ``persona_sim.errors``; nothing about
models, methods, the wire or the simulation.
"""
