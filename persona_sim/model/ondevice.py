"""Real gradient steps on each device's own copy of the model (the retraining baselines).

Every device's parameters are its own: a batch of B devices holds B copies of
the trained parameters, and ``torch.func.vmap`` runs each device's loss and
gradient on its own copy in one call, so a device's result never depends on
which devices share its batch's arithmetic beyond float rounding (the
simulation runs each device alone). Adam is written out so its state is
per-device too.

What is trained (``part``):
    adaptive   Θc, the head's adaptive layers (Θb's output is computed once)
    all        Θb less the shared item table, and Θc
    norm       the encoder's LayerNorm scales and shifts (Tent)
    patch      a low-rank patch ΔW = A·B on each adaptive layer's weight, the base frozen (DCCL's MetaPatch)
What it minimises (``objective``):
    next-item  sampled cross-entropy of the true next item against shared negatives (labelled rows)
    entropy    the entropy of the predicted distribution over the whole catalogue (no labels)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .adaptation import PersonaModels
from .local import LocalData
from .networks import adaptive_forward

ITEM_TABLE = "encoder.item_emb.weight"   # shared by every device (scoring uses the catalogue's table)
BETAS, EPS = (0.9, 0.999), 1e-8


@dataclass
class Learned:
    head: dict[str, torch.Tensor]                 # each device's Θc, (B, ...)
    shared: dict[str, torch.Tensor] | None        # each device's changed Θb parameters, (B, ...); None: Θb unchanged


def norm_names(models: PersonaModels) -> list[str]:
    """Θb's LayerNorm parameter names (empty for GRU4Rec)."""
    return [f"{m}.{p}" for m, mod in models.shared.named_modules() if isinstance(mod, nn.LayerNorm)
            for p, _ in mod.named_parameters(recurse=False)]


def _shared_params(models: PersonaModels) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in models.shared.named_parameters()}


def _trainable(models: PersonaModels, part: str, rank: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One device's starting values of what ``part`` trains."""
    head = {f"head:{k}": v[0].detach() for k, v in models.head.items()}
    if part == "adaptive":
        return head
    if part == "patch":
        out = {}
        for k, w in head.items():
            if k.endswith(".weight"):
                n_in, n_out = w.shape
                out[k + ":A"] = torch.randn(n_in, rank, generator=gen) / rank ** 0.5   # (N_in, r)
                out[k + ":B"] = torch.zeros(rank, n_out)                                 # (r, N_out): ΔW starts at 0
        return out
    shared = _shared_params(models)
    names = norm_names(models) if part == "norm" else [k for k in shared if k != ITEM_TABLE]
    out = {f"shared:{k}": shared[k] for k in names}
    return out if part == "norm" else {**out, **head}


def _split(models: PersonaModels, p: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """One device's trainable values -> (Θb for functional_call, Θc), the frozen rest filled in."""
    shared = {**_shared_params(models), **{k[7:]: v for k, v in p.items() if k.startswith("shared:")}}
    head = {k: v[0].detach() for k, v in models.head.items()}
    head.update({k[5:]: v for k, v in p.items() if k.startswith("head:") and ":" not in k[5:]})
    for k in list(head):
        if f"head:{k}:A" in p:
            head[k] = head[k] + p[f"head:{k}:A"] @ p[f"head:{k}:B"]
    return shared, head


def device_vectors(models: PersonaModels, p: dict[str, torch.Tensor], seq: torch.Tensor,
                   h: torch.Tensor | None = None) -> torch.Tensor:
    """One device: its input (L,) -> its user vectors (L, D); h (L, D) is Θb's output when Θb is not trained."""
    shared, head = _split(models, p)
    if h is None:
        h = functional_call(models.shared, shared, (seq[None],))[0]
    return adaptive_forward(h, head)


def _loss(models: PersonaModels, objective: str, p, seq, targets, mask, h, negatives) -> torch.Tensor:
    u = device_vectors(models, p, seq, h)                                        # (L, D)
    emb = models.item_emb.detach()
    weight = mask.float() / mask.sum().clamp(min=1)                              # (L,) mean over used positions
    if objective == "entropy":
        logp = F.log_softmax(u @ emb[1:].T, dim=-1)                              # (L, N): every real item
        return -(weight * (logp.exp() * logp).sum(-1)).sum()
    logits = torch.cat([(u * emb[targets]).sum(-1, keepdim=True), u @ emb[negatives].T], dim=-1)   # (L, 1 + k)
    return (weight * F.cross_entropy(logits, torch.zeros(len(u), dtype=torch.long), reduction="none")).sum()


def learn(models: PersonaModels, data: LocalData, part: str, objective: str, steps: int, lr: float,
          negatives: torch.Tensor, gen: torch.Generator, rank: int = 4) -> Learned:
    """``steps`` Adam steps per device on its own rows; returns every device's new Θc (and Θb, when trained)."""
    B = len(data.seqs)
    start = _trainable(models, part, rank, gen)
    p = {k: v[None].expand(B, *v.shape).clone() for k, v in start.items()}      # (B, ...) a copy per device
    h = None
    if part in ("adaptive", "patch"):
        with torch.no_grad():
            h = models.shared(data.seqs)                                         # (B, L, D): Θb is frozen
    one = grad(lambda q, s, t, m, hh: _loss(models, objective, q, s, t, m, hh, negatives))
    if B == 1:     # one device (the simulation): skip vmap's batching overhead
        def step_grad(q, s, t, m, hh):
            g1 = one({k: v[0] for k, v in q.items()}, s[0], t[0], m[0], None if hh is None else hh[0])
            return {k: v[None] for k, v in g1.items()}
    else:
        step_grad = vmap(one, in_dims=(0, 0, 0, 0, 0 if h is not None else None))
    m1 = {k: torch.zeros_like(v) for k, v in p.items()}
    m2 = {k: torch.zeros_like(v) for k, v in p.items()}
    for step in range(1, steps + 1):
        g = step_grad(p, data.seqs, data.targets, data.mask, h)
        c1, c2 = 1 - BETAS[0] ** step, 1 - BETAS[1] ** step
        for k in p:
            m1[k].mul_(BETAS[0]).add_(g[k], alpha=1 - BETAS[0])
            m2[k].mul_(BETAS[1]).addcmul_(g[k], g[k], value=1 - BETAS[1])
            p[k] = p[k] - lr * (m1[k] / c1) / ((m2[k] / c2).sqrt() + EPS)
    return _learned(models, p, B)


def _learned(models: PersonaModels, p: dict[str, torch.Tensor], B: int) -> Learned:
    head = {k: v[0].detach().expand(B, *v.shape[1:]).clone() for k, v in models.head.items()}
    for k in head:
        if f"head:{k}" in p:
            head[k] = p[f"head:{k}"]
        elif f"head:{k}:A" in p:
            head[k] = head[k] + p[f"head:{k}:A"] @ p[f"head:{k}:B"]              # (B, N_in, r) @ (B, r, N_out)
    shared = {k[7:]: v for k, v in p.items() if k.startswith("shared:")} or None
    return Learned(head, shared)


@torch.no_grad()
def learned_vectors(models: PersonaModels, learned: Learned, seqs: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Each device's user vector at position ``last`` (B,) of its input seqs (B, L), with its own Θb -> (B, D)."""
    assert learned.shared is not None, "Θb unchanged: use the cached outputs"
    base = _shared_params(models)

    def one(sp, s, i):
        h = functional_call(models.shared, {**base, **sp}, (s[None],))[0]       # (L, D)
        return h[i]
    h = vmap(one)(learned.shared, seqs, last)                                    # (B, D)
    return adaptive_forward(h, learned.head)


@torch.no_grad()
def own_output(models: PersonaModels, shared: dict[str, torch.Tensor], seq: torch.Tensor) -> torch.Tensor:
    """One device's Θb (its changed parameters ``shared``, unbatched) on its input seq (L,) -> the output
    after the whole sequence (D,)."""
    return functional_call(models.shared, {**_shared_params(models), **shared}, (seq[None],))[0, -1]
