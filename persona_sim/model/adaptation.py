"""Persona's inference on the cloud: a device's window -> its new adaptive layers.

    static      the global prototype's Θc, never edited
    persona-s   the global PE edits the global PM (Eq. 6)
    persona-m   every group PE edits its group PM on the same window in one
                batched call (Eq. 11); the device gets the group whose edit is
                smallest (Eq. 12), or, as an option, the group whose k-means
                centre is nearest to the global PE's edit (Eq. 9's partition)
    group-finetune  the group PM of the nearest centre, unedited (the paper's
                "Group Fine-tuning" of Table 3)

The cloud node, the offline evaluation and model selection all call ``adapt``,
so the numbers they report come from one implementation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .editor import EditorBank, apply_edits, edit_norm, flat_edits
from .networks import SharedLayers


@dataclass
class Groups:
    """Persona (m)'s N_M groups: prototype heads (P, ...), their editors (a bank of P) and k-means centres (P, F)."""

    heads: dict[str, torch.Tensor]
    editor: EditorBank
    centres: torch.Tensor

    @property
    def count(self) -> int:
        return self.editor.prototypes


@dataclass
class PersonaModels:
    shared: SharedLayers                   # Θb, identical on every device
    head: dict[str, torch.Tensor]          # the global PM's Θc, each (1, ...)
    editor: EditorBank                     # the global PE (a bank of 1)
    groups: Groups | None = None           # Persona (m), when trained
    assignment: str = "edit-norm"

    @property
    def item_emb(self) -> torch.Tensor:
        return self.shared.item_emb


@dataclass
class Adapted:
    params: dict[str, torch.Tensor]        # each device's adaptive layers, (B, ...)
    prototype: torch.Tensor                # (B,) group index (0 for the global prototype)
    edit_norm: torch.Tensor                # (B,) Frobenius norm of the applied clipped edit


def sq_dist(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """x (B, F), centres (P, F) -> (B, P) squared Euclidean distances."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ centres.T + centres.pow(2).sum(1)[None]).clamp(min=0)


def nearest_centre(edits: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """edits (B, F), centres (P, F) -> (B,) index of the nearest centre."""
    return sq_dist(edits, centres).argmin(1)


@torch.no_grad()
def adapt(models: PersonaModels, method: str, windows: torch.Tensor) -> Adapted:
    """windows (B, W) item ids, left-aligned, 0-padded -> the adaptive layers ``method`` gives each device."""
    B = len(windows)
    zeros = torch.zeros(B, dtype=torch.long)
    if method == "static":
        params = {k: v[0].expand(B, *v.shape[1:]) for k, v in models.head.items()}
        return Adapted(params, zeros, torch.zeros(B))
    emb, mask = models.item_emb[windows], windows > 0                          # (B, W, D), (B, W)
    if method == "persona-s":
        edits = models.editor.edits(emb, mask)                                 # each (1, B, ...)
        params = {k: v[0] for k, v in apply_edits(models.head, edits).items()}
        return Adapted(params, zeros, edit_norm(edits)[0])
    groups = models.groups
    if method not in ("persona-m", "group-finetune"):
        raise ValueError(f"unknown method {method!r}")
    if groups is None:
        raise ValueError(f"{method} needs a bundle trained with group prototypes")
    if method == "group-finetune":
        chosen = nearest_centre(flat_edits(models.editor.edits(emb, mask))[0], groups.centres)
        return Adapted({k: v[chosen] for k, v in groups.heads.items()}, chosen, torch.zeros(B))
    edits = groups.editor.edits(emb, mask)                                     # each (P, B, ...): all groups at once
    norms = edit_norm(edits)                                                   # (P, B)
    if models.assignment == "edit-norm":
        chosen = norms.argmin(0)                                               # (B,) Eq. 12
    else:
        chosen = nearest_centre(flat_edits(models.editor.edits(emb, mask))[0], groups.centres)
    rows = torch.arange(B)
    params = {k: v[chosen, rows] for k, v in apply_edits(groups.heads, edits).items()}
    return Adapted(params, chosen, norms[chosen, rows])
