"""Adaptation methods, one module each, behind one small interface (``base.Method``).

The scenario names methods; everything else asks the registry here for the
method's attributes (does it ask the cloud, does it need groups, how many
prototypes a request costs, how it adapts) and never branches on a name.
Adding a method = one module here + its scenario keys (``scenario.schema``) +
tests. May import ``model``, ``scenario`` and ``errors``.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import ScenarioError
from . import (
    cloud_finetune,
    dccl,
    duet,
    finetune,
    group_finetune,
    joint_unedited,
    persona_joint,
    persona_joint_m,
    persona_m,
    persona_s,
    static,
    tta,
)
from .base import DevicePart, Method

METHODS: dict[str, Method] = {m.name: m for m in (
    static.METHOD, persona_s.METHOD, persona_m.METHOD, group_finetune.METHOD,
    finetune.METHOD, tta.METHOD, dccl.METHOD, duet.METHOD, cloud_finetune.METHOD, persona_joint.METHOD,
    persona_joint_m.METHOD, joint_unedited.METHOD)}
BASELINE = static.METHOD.name   # what the reports measure every other method against


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}") from None


def needs_groups(names: Iterable[str]) -> bool:
    """Whether a bundle for these methods must hold Persona (m)'s group prototypes and editors."""
    return any(get(n).uses_groups for n in names)


def needs_tuned_groups(names: Iterable[str]) -> bool:
    """Whether a bundle for these methods must hold groups with fine-tuned PMs (the paper's), whatever
    Persona (m) serves."""
    return any(get(n).uses_tuned_groups for n in names)


def needs_generator(names: Iterable[str]) -> bool:
    """Whether a bundle for these methods must hold DUET's generator."""
    return any(get(n).uses_generator for n in names)


def needs_joint(names: Iterable[str]) -> bool:
    """Whether a bundle for these methods must hold the jointly trained Θb and editor."""
    return any(get(n).uses_joint for n in names)


def needs_joint_groups(names: Iterable[str]) -> bool:
    """Whether a bundle for these methods must hold groups built on the jointly trained models."""
    return any(get(n).uses_joint_groups for n in names)


def require_simulable(names: Iterable[str], source: str) -> None:
    """Refuse methods that ``eval`` scores but a simulated run cannot (their devices would need a Θb of their own)."""
    only = [n for n in names if get(n).offline_only]
    if only:
        raise ScenarioError(source, [("methods", f"{', '.join(only)} can only be scored offline (persona-sim eval): "
                                      "a run's devices share one Θb", only)])


__all__ = ["BASELINE", "METHODS", "DevicePart", "Method", "get", "needs_generator", "needs_groups", "needs_joint",
           "needs_joint_groups", "require_simulable"]
