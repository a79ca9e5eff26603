"""The cloud's offline pipeline: train the prototype, the global editor and
Persona (m)'s groups on the training users (each stage cached), pack them into
a signed model bundle, and evaluate a method on held-out cases.

May import ``model``, ``methods``, ``data``, ``scenario`` and ``errors``.
"""
