"""Multi-prototype Persona (§3.3): initial partition, group PMs and group PEs.

1. Initial partition (Eq. 9): the global PE edits the global PM for every
   historical sample; k-means (k-means++ start, Lloyd iterations) clusters
   those edits into N_M groups. It is fitted on ``train.kmeans_samples`` of
   them and then assigns all, so memory stays bounded on large data.
2. Group PMs (Eq. 10): the global PM's Θc fine-tuned on each group's samples
   (Θb stays shared: it is fixed on every device). With
   ``persona.group_prototypes: false`` every group keeps the global PM.
3. Group PEs (Eq. 10): the global PE fine-tuned per group, editing its group PM.
``persona.groups: authors`` does what the public research code does instead:
k-means over the global PE's codes (the features its heads read), each group
PM the global PM plus its centre's edit (not fine-tuned), assignment to the
nearest centre in code space with ``assignment: nearest-centre``.
Both fine-tunings are selected on the validation cases, their starting points
included: group PMs through the nearest-centre assignment (there is no group
edit yet; starting from the global PM), group PEs through Persona (m) itself
(starting from copies of the global PE). Where no epoch beats its start, the
groups stay the global models, and Persona (m) gives Persona (s)'s edits.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..model.adaptation import (
    Groups,
    PersonaModels,
    edit_groups,
    nearest_centre,
    nearest_group,
    partition_vectors,
    sq_dist,
)
from ..model.editor import EditorBank
from ..model.networks import adaptive_forward
from ..scenario.schema import Scenario
from .evaluation import CaseSet, evaluate, mean_metrics
from .training import EditorSamples, Progress, editor_epoch, fit, sampled_loss

CHUNK = 2048
KMEANS_ITERS = 50


@torch.no_grad()
def global_vectors(editor: EditorBank, item_emb: torch.Tensor, windows: torch.Tensor, space: str) -> torch.Tensor:
    """The global PE's flattened edits (or codes) for windows (N, W) -> (N, F)."""
    return torch.cat([partition_vectors(editor, item_emb[w], w > 0, space) for w in windows.split(CHUNK)])


def kmeans(x: torch.Tensor, k: int, gen: torch.Generator, iters: int = KMEANS_ITERS) -> torch.Tensor:
    """Centres (k, F) of x (N, F): k-means++ seeding, then Lloyd until assignments stop changing."""
    if len(x) < k:
        raise ValueError(f"cannot make {k} groups from {len(x)} samples")
    centres = x[torch.randint(len(x), (1,), generator=gen)]
    for _ in range(1, k):
        d = sq_dist(x, centres).min(1).values
        pick = torch.multinomial(d / d.sum(), 1, generator=gen) if d.sum() > 0 else torch.randint(len(x), (1,), generator=gen)
        centres = torch.cat([centres, x[pick]])
    assign = None
    for _ in range(iters):
        d = sq_dist(x, centres)
        new = d.argmin(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            # An emptied group restarts at the point farthest from its centre.
            centres[j] = members.mean(0) if len(members) else x[d.min(1).values.argmax()]
    return centres


@torch.no_grad()
def partition(editor: EditorBank, item_emb: torch.Tensor, samples: EditorSamples, k: int, fit_on: int,
              gen: torch.Generator, space: str = "edits") -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 9: (centres (k, F), group of every sample (N,))."""
    pick = torch.randperm(len(samples), generator=gen)[:fit_on]
    centres = kmeans(global_vectors(editor, item_emb, samples.windows[pick], space), k, gen)
    groups = torch.cat([nearest_centre(global_vectors(editor, item_emb, w, space), centres)
                        for w in samples.windows.split(CHUNK)])
    return centres, groups


def _head_epoch(head: nn.ParameterDict, samples: EditorSamples, rows: torch.Tensor, item_emb: torch.Tensor,
                opt: torch.optim.Optimizer, scenario: Scenario, gen: torch.Generator) -> None:
    for idx in rows[torch.randperm(len(rows), generator=gen)].split(scenario.train.batch_size):
        params = {k.replace("_", "."): v for k, v in head.items()}
        loss = sampled_loss(adaptive_forward(samples.h[idx], params), samples.targets[idx], item_emb,
                            scenario.train, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_groups(models: PersonaModels, samples: EditorSamples, valid: CaseSet, scenario: Scenario,
                 progress: Progress) -> tuple[Groups, dict]:
    """Persona (m)'s groups, built from the trained global models."""
    tr, k = scenario.train, scenario.persona.prototypes
    torch.manual_seed(scenario.seed + 2)
    gen = torch.Generator().manual_seed(scenario.seed + 2)
    emb = models.item_emb
    authors = scenario.persona.groups == "authors"
    space = "codes" if authors else "edits"
    centres, member = partition(models.editor, emb, samples, k, tr.kmeans_samples, gen, space)
    rows = [torch.nonzero(member == j)[:, 0] for j in range(k)]
    names = list(models.head)
    meta: dict = {"group_sizes": [len(r) for r in rows]}

    # Group PMs: each group's Θc, from the global one (keys 'head_0_weight': ParameterDict forbids '.'); the
    # authors' code starts each at the global PM plus its centre's edit and does not fine-tune it.
    start = {n: models.head[n][0].expand(k, *models.head[n].shape[1:]) for n in names}
    if authors and scenario.persona.group_prototypes:
        with torch.no_grad():
            centre_edits = models.editor.edits_from_codes(centres[None])              # each (1, k, ...)
            start = {n: v + centre_edits[n][0] for n, v in start.items()}
    heads = nn.ModuleList(nn.ParameterDict({n.replace(".", "_"): nn.Parameter(start[n][j].clone())
                                            for n in names}) for j in range(k))

    def stacked_heads() -> dict[str, torch.Tensor]:
        return {n: torch.stack([h[n.replace(".", "_")].detach() for h in heads]) for n in names}

    groups = Groups(stacked_heads(), EditorBank.stack([models.editor] * k), centres, space)
    view = PersonaModels(models.shared, models.head, models.editor, groups, "nearest-centre")
    if scenario.persona.group_prototypes and not authors:
        opts = [torch.optim.Adam(h.parameters(), lr=tr.group_lr) for h in heads]

        def head_round() -> None:
            for j in range(k):
                _head_epoch(heads[j], samples, rows[j], emb, opts[j], scenario, gen)
            groups.heads = stacked_heads()

        def validate_heads() -> dict[str, float]:
            return mean_metrics(evaluate(view, nearest_group, valid, scenario.model.max_len))

        meta["group_prototypes"] = fit("group PMs", tr.group_epochs, tr.patience, head_round, validate_heads,
                                       heads, progress, from_start=True)
        for p in heads.parameters():
            p.requires_grad_(False)
        groups.heads = stacked_heads()

    # Group PEs: the global PE fine-tuned per group, editing that group's PM.
    editors = nn.ModuleList(copy.deepcopy(models.editor) for _ in range(k))
    for p in editors.parameters():
        p.requires_grad_(True)
    opts = [torch.optim.Adam(e.parameters(), lr=tr.group_lr) for e in editors]
    view.assignment = scenario.persona.assignment

    def editor_round() -> None:
        for j in range(k):
            head_j = {n: v[j: j + 1] for n, v in groups.heads.items()}
            editor_epoch(editors[j], head_j, samples, rows[j], emb, opts[j], scenario, gen)
        groups.editor = EditorBank.stack(list(editors))

    meta["group_editors"] = fit("group PEs", tr.group_epochs, tr.patience, editor_round,
                                lambda: mean_metrics(evaluate(view, edit_groups, valid, scenario.model.max_len)),
                                editors, progress, from_start=True)
    groups.editor = EditorBank.stack(list(editors))
    for p in groups.editor.parameters():
        p.requires_grad_(False)
    return groups, meta
