"""Persona's inference: a device's window -> its new adaptive layers.

The trained models (``PersonaModels``) and five primitives over them, each
(B, W) windows -> ``Adapted``: ``unedited``, ``edit_global`` (Eq. 6),
``edit_groups`` (Eqs. 11-12), ``nearest_group`` and DUET's ``generate``. The methods package binds
them to method names; the cloud node, the offline evaluation and model
selection all call these, so the numbers they report come from one
implementation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from .editor import EditorBank, apply_edits, edit_norm, flat_edits
from .networks import SharedLayers


@dataclass
class Groups:
    """Persona (m)'s N_M groups: prototype heads (P, ...), their editors (a bank of P) and k-means centres (P, F)."""

    heads: dict[str, torch.Tensor]
    editor: EditorBank
    centres: torch.Tensor
    space: str = "edits"       # what the centres cluster: the global PE's edits (Eq. 9) or its codes (the authors')

    @property
    def count(self) -> int:
        return self.editor.prototypes


@dataclass
class Generator:
    """DUET's parameter generator: a base Θc and an unclipped editor, trained together, so the layers it gives
    a device are an affine function of the window's features (generated outright, no prototype, no clip)."""

    head: dict[str, torch.Tensor]          # each (1, ...)
    editor: EditorBank                     # a bank of 1, clip disabled


@dataclass
class Joint:
    """The authors' Persona (s) as their code trains it: a fresh Θb and the editor trained together, end to
    end, editing the global prototype's Θc (a fixed offset)."""

    shared: SharedLayers                   # its own Θb, not the static model's
    editor: EditorBank                     # a bank of 1
    groups: Groups | None = None           # Persona (m)'s groups built on it (persona-joint-m), when trained
    assignment: str = "nearest-centre"     # how those groups are assigned


@dataclass
class PersonaModels:
    shared: SharedLayers                   # Θb, identical on every device
    head: dict[str, torch.Tensor]          # the global PM's Θc, each (1, ...)
    editor: EditorBank                     # the global PE (a bank of 1)
    groups: Groups | None = None           # Persona (m), when trained
    assignment: str = "edit-norm"
    tuned_groups: Groups | None = None     # the paper's groups (fine-tuned PMs) when ``groups`` are other ones
    generator: Generator | None = None     # DUET, when trained
    joint: Joint | None = None             # the authors' joint training, when trained

    @property
    def item_emb(self) -> torch.Tensor:
        return self.shared.item_emb

    def jointly_trained(self) -> "PersonaModels":
        """The models the joint methods predict with: its own Θb, editor and groups, the global prototype's Θc."""
        if self.joint is None:
            raise ValueError("this method needs a bundle trained with the joint editor")
        j = self.joint
        return PersonaModels(j.shared, self.head, j.editor, j.groups, j.assignment)


@dataclass
class Adapted:
    params: dict[str, torch.Tensor]        # each device's adaptive layers, (B, ...)
    prototype: torch.Tensor                # (B,) group index (0 for the global prototype)
    edit_norm: torch.Tensor                # (B,) Frobenius norm of the applied clipped edit


AdaptFn = Callable[[PersonaModels, torch.Tensor], Adapted]   # (models, windows (B, W)) -> each device's layers


def sq_dist(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """x (B, F), centres (P, F) -> (B, P) squared Euclidean distances."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ centres.T + centres.pow(2).sum(1)[None]).clamp(min=0)


def nearest_centre(edits: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """edits (B, F), centres (P, F) -> (B,) index of the nearest centre."""
    return sq_dist(edits, centres).argmin(1)


def partition_vectors(editor: EditorBank, emb: torch.Tensor, mask: torch.Tensor, space: str) -> torch.Tensor:
    """What groups are formed and found by, for (B, W, D) windows -> (B, F): the global PE's flattened edits
    (Eq. 9), or its codes (the per-layer features its heads read, as the authors' code clusters)."""
    return (editor.codes(emb, mask) if space == "codes" else flat_edits(editor.edits(emb, mask)))[0]


def _window_inputs(models: PersonaModels, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """windows (B, W) -> their item embeddings (B, W, D) and the mask of real items (B, W)."""
    return F.embedding(windows, models.item_emb), windows > 0          # a plain gather: cheaper than item_emb[windows]


def _groups(models: PersonaModels) -> Groups:
    if models.groups is None:
        raise ValueError("this method needs a bundle trained with group prototypes")
    return models.groups


@torch.no_grad()
def unedited(models: PersonaModels, windows: torch.Tensor) -> Adapted:
    """The global prototype's Θc for every device, never edited."""
    B = len(windows)
    params = {k: v[0].expand(B, *v.shape[1:]) for k, v in models.head.items()}
    return Adapted(params, torch.zeros(B, dtype=torch.long), torch.zeros(B))


@torch.no_grad()
def edit_global(models: PersonaModels, windows: torch.Tensor) -> Adapted:
    """The global PE's clipped edit of the global PM (Eq. 6)."""
    edits = models.editor.edits(*_window_inputs(models, windows))             # each (1, B, ...)
    params = {k: v[0] for k, v in apply_edits(models.head, edits).items()}
    return Adapted(params, torch.zeros(len(windows), dtype=torch.long), edit_norm(edits)[0])


@torch.no_grad()
def nearest_group(models: PersonaModels, windows: torch.Tensor) -> Adapted:
    """The group PM whose k-means centre is nearest to the global PE's edit, unedited."""
    groups = _groups(models)
    chosen = nearest_centre(partition_vectors(models.editor, *_window_inputs(models, windows), groups.space),
                            groups.centres)
    return Adapted({k: v[chosen] for k, v in groups.heads.items()}, chosen, torch.zeros(len(windows)))


@torch.no_grad()
def nearest_tuned_group(models: PersonaModels, windows: torch.Tensor) -> Adapted:
    """``nearest_group`` among the groups whose PMs were fine-tuned on their partitions (Eq. 10)."""
    return nearest_group(models if models.tuned_groups is None else replace(models, groups=models.tuned_groups),
                         windows)


@torch.no_grad()
def edit_groups(models: PersonaModels, windows: torch.Tensor) -> Adapted:
    """Every group PE edits its group PM in one batched call (Eq. 11); each device gets the group whose
    edit is smallest (Eq. 12), or, with ``assignment: nearest-centre``, the group nearest to the global PE's edit
    (or code: the norm of its residual from the centre)."""
    groups = _groups(models)
    emb, mask = _window_inputs(models, windows)                                # (B, W, D), (B, W)
    edits = groups.editor.edits(emb, mask)                                     # each (P, B, ...): all groups at once
    norms = edit_norm(edits)                                                   # (P, B)
    if models.assignment == "edit-norm":
        chosen = norms.argmin(0)                                               # (B,) Eq. 12
    else:
        chosen = nearest_centre(partition_vectors(models.editor, emb, mask, groups.space), groups.centres)
    rows = torch.arange(len(windows))
    params = {k: v[chosen, rows] for k, v in apply_edits(groups.heads, edits).items()}
    return Adapted(params, chosen, norms[chosen, rows])


@torch.no_grad()
def generate(models: PersonaModels, windows: torch.Tensor) -> Adapted:
    """DUET: the generator's layers for the window, unclipped."""
    if models.generator is None:
        raise ValueError("this method needs a bundle trained with DUET's generator")
    g = models.generator
    out = g.editor.edits(*_window_inputs(models, windows))                    # each (1, B, ...)
    params = {k: v[0] for k, v in apply_edits(g.head, out).items()}
    return Adapted(params, torch.zeros(len(windows), dtype=torch.long), edit_norm(out)[0])
