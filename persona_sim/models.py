"""The on-device model: shared layers Θb (SASRec encoder) + adaptive layers Θc (the head).

SASRec here is the canonical masked one: learned positions, causal attention,
padding masked out of attention and loss. Sequences are right-padded and
positions count from the first item, so the output at position t depends on
items 0..t only and equals the output of running the prefix alone.

The adaptive layers are a 2-layer MLP that turns the sequence representation
``h`` into the user vector ``u``; items are scored by ``u · E[item]`` with the
shared item embeddings E. The head is written functionally (weights passed in,
one set per sample) so a Parameter Editor can give every device its own.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelSpec


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)                       # 3 × (B, L, D)
        q, k, v = (t.view(B, L, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, H, L, Dh)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D // self.heads)  # (B, H, L, L)
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).triu(1)  # True above the diagonal
        mask = causal[None, None] | pad[:, None, None, :]             # (B, 1, L, L): hide future and padding keys
        att = att.masked_fill(mask, float("-inf"))
        # A query row whose keys are all hidden (a padding position at t=0) would be NaN: zero it.
        att = torch.nan_to_num(torch.softmax(att, dim=-1), nan=0.0)
        y = self.drop(att) @ v                                        # (B, H, L, Dh)
        y = y.transpose(1, 2).reshape(B, L, D)                        # (B, L, D)
        return self.proj(y)


class Block(nn.Module):
    """Pre-norm transformer block (attention + point-wise feed-forward)."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads, dropout)
        self.ln2 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), pad))
        x = x + self.drop(self.ff(self.ln2(x)))
        return x


class SASRecEncoder(nn.Module):
    """Shared layers Θb: item sequence (B, L) -> representation per position (B, L, D)."""

    def __init__(self, num_items: int, spec: ModelSpec):
        super().__init__()
        self.max_len = spec.max_len
        self.item_emb = nn.Embedding(num_items + 1, spec.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(spec.max_len, spec.hidden)
        self.drop = nn.Dropout(spec.dropout)
        self.blocks = nn.ModuleList(Block(spec.hidden, spec.heads, spec.dropout) for _ in range(spec.blocks))
        self.ln = nn.LayerNorm(spec.hidden)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.pos_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        B, L = seq.shape
        pad = seq == 0                                                 # (B, L)
        pos = torch.arange(L, device=seq.device)[None].expand(B, L)    # (B, L): positions from the first item
        x = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(pos)
        x = self.drop(x) * (~pad)[..., None]
        for block in self.blocks:
            x = block(x, pad) * (~pad)[..., None]
        return self.ln(x)                                              # (B, L, D)


# ---- adaptive layers Θc -------------------------------------------------------------

HEAD_LAYERS = ("head.0", "head.1")  # the adaptive layers, in order


def head_shapes(hidden: int) -> dict[str, tuple[tuple[int, int], int]]:
    """Per adaptive layer: ((N_in, N_out), bias size)."""
    return {"head.0": ((hidden, hidden), hidden), "head.1": ((hidden, hidden), hidden)}


def init_head(hidden: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Prototype head parameters, as learnable leaf tensors keyed '<layer>.weight' / '<layer>.bias'."""
    params = {}
    for name, ((n_in, n_out), n_b) in head_shapes(hidden).items():
        bound = 1.0 / math.sqrt(n_in)
        params[f"{name}.weight"] = (torch.rand(n_in, n_out, generator=generator) * 2 - 1) * bound
        params[f"{name}.bias"] = torch.zeros(n_b)
    return params


def head_forward(h: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply the adaptive layers: h (..., D) -> u (..., D).

    Weights are (N_in, N_out) shared by all rows, or (B, N_in, N_out) one per
    row of a (B, D) input (biases likewise (N_out,) or (B, N_out)).
    """
    x = h
    for i, name in enumerate(HEAD_LAYERS):
        w, b = params[f"{name}.weight"], params[f"{name}.bias"]
        x = torch.einsum("bi,bio->bo", x, w) if w.dim() == 3 else x @ w   # (..., N_out)
        x = x + b
        if i < len(HEAD_LAYERS) - 1:
            x = F.gelu(x)
    return x


def _key(name: str) -> str:
    return name.replace(".", "_")


def _head_names() -> list[str]:
    return [f"{layer}.{part}" for layer in HEAD_LAYERS for part in ("weight", "bias")]


class PrototypeModel(nn.Module):
    """Θb + the prototype's Θc, trained end to end before the editor."""

    def __init__(self, num_items: int, spec: ModelSpec, seed: int):
        super().__init__()
        self.encoder = SASRecEncoder(num_items, spec)
        gen = torch.Generator().manual_seed(seed)
        # ParameterDict keys may not contain '.', so 'head.0.weight' is stored as 'head_0_weight'.
        self.head = nn.ParameterDict({_key(k): nn.Parameter(v) for k, v in init_head(spec.hidden, gen).items()})

    def head_params(self) -> dict[str, torch.Tensor]:
        return {k: self.head[_key(k)] for k in sorted(_head_names())}

    def user_vectors(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, D) user vector after every prefix."""
        return head_forward(self.encoder(seq), self.head_params())
