"""Floating-point operations of the models' passes: what an adaptation step costs, relative to another.

Counts are multiply-adds × 2 of the dense layers and attention, per token;
layer norms, activations and the optimiser are left out (a few per cent at
these widths). A backward pass costs two forwards of the layers it trains
(gradients of activations and of weights) and one forward of the layers it
only passes gradients through.
"""
from __future__ import annotations

from ..scenario.schema import ModelSpec


def encoder_flops(spec: ModelSpec, length: int) -> float:
    """One token through Θb (encoder and the head's shared layers), in a sequence of ``length`` tokens."""
    D = spec.hidden
    if spec.arch == "sasrec":
        attention = 2 * 2 * length * D                       # scores and weighted sum over the keys
        per_block = 2 * D * 3 * D + 2 * D * D + 2 * 2 * D * D + attention   # qkv, proj, feed-forward
    else:
        per_block = 2 * 3 * 2 * D * D                        # a GRU layer: 3 gates over input and state
    return spec.blocks * per_block + (spec.head_layers - spec.adaptive_layers) * 2 * D * D


def adaptive_flops(spec: ModelSpec) -> float:
    """One token through Θc."""
    return spec.adaptive_layers * 2 * spec.hidden * spec.hidden


def step_flops(spec: ModelSpec, part: str, tokens: int, positions: int, candidates: int) -> float:
    """One training step on one device's row: ``tokens`` input items, the loss at ``positions`` of them,
    each scored against ``candidates`` items. ``part`` as ``model.ondevice``."""
    enc = tokens * encoder_flops(spec, tokens)
    head = positions * (adaptive_flops(spec) + 2 * spec.hidden * candidates)
    if part in ("adaptive", "patch"):
        return 3 * head                                      # Θb's output is cached: forward + backward of the head
    if part == "norm":
        return 2 * (enc + head)                              # gradients pass through everything; few weights learn
    return 3 * (enc + head)                                  # all


def reference_step_flops(spec: ModelSpec, negatives: int) -> float:
    """The step a device profile's ``finetune_step_ms`` times: the whole model trained on one full history
    (``max_len`` items, the loss at every position against the positive and ``negatives`` sampled items)."""
    return step_flops(spec, "all", spec.max_len, spec.max_len, 1 + negatives)
