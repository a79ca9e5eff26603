"""The on-device model: shared layers Θb + adaptive layers Θc.

Two sequence encoders, both causal over right-padded sequences whose positions
count from the first item, so the output at position t depends on items 0..t
only and equals the output of running the prefix alone:

- SASRec, the canonical masked one: learned positions, causal attention,
  padding masked out of attention and loss;
- GRU4Rec: item embeddings into a (multi-layer) GRU.

The prediction head is an MLP of ``head_layers`` hidden -> hidden layers that
turns the sequence representation into the user vector ``u``; items are scored
by ``u · E[item]`` with the shared item embeddings E. The head's last
``adaptive_layers`` layers are Θc; the layers before them belong to Θb. Θc is
written functionally (weights passed in, one set per sample) so a Parameter
Editor can give every device its own.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..scenario.schema import ModelSpec


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
    """Item sequence (B, L) -> representation per position (B, L, D)."""

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


class GRU4RecEncoder(nn.Module):
    """Item sequence (B, L) -> GRU state after every position (B, L, D)."""

    def __init__(self, num_items: int, spec: ModelSpec):
        super().__init__()
        self.max_len = spec.max_len
        self.item_emb = nn.Embedding(num_items + 1, spec.hidden, padding_idx=0)
        self.drop = nn.Dropout(spec.dropout)
        self.gru = nn.GRU(spec.hidden, spec.hidden, num_layers=spec.blocks, batch_first=True,
                          dropout=spec.dropout if spec.blocks > 1 else 0.0)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.item_emb(seq))                              # (B, L, D)
        y, _ = self.gru(x)                                             # (B, L, D): causal; right padding comes after
        return y * (seq != 0)[..., None]


def make_encoder(num_items: int, spec: ModelSpec) -> nn.Module:
    return {"sasrec": SASRecEncoder, "gru4rec": GRU4RecEncoder}[spec.arch](num_items, spec)


# ---- the prediction head --------------------------------------------------------------

def head_layer_names(spec: ModelSpec) -> tuple[list[str], list[str]]:
    """(shared head layers, adaptive head layers), in order: 'head.0', 'head.1', ..."""
    names = [f"head.{i}" for i in range(spec.head_layers)]
    cut = spec.head_layers - spec.adaptive_layers
    return names[:cut], names[cut:]


def adaptive_shapes(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """Per adaptive layer, in order: (N_in, N_out); the bias has N_out entries."""
    return {name: (spec.hidden, spec.hidden) for name in head_layer_names(spec)[1]}


def param_names(shapes: dict[str, tuple[int, int]]) -> list[str]:
    return [f"{layer}.{part}" for layer in shapes for part in ("weight", "bias")]


def init_linear(n_in: int, n_out: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    bound = 1.0 / math.sqrt(n_in)
    return (torch.rand(n_in, n_out, generator=generator) * 2 - 1) * bound, torch.zeros(n_out)


def adaptive_forward(h: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply the adaptive layers (in the order of ``params``' layers): h (..., D) -> u (..., D).

    Weights are (N_in, N_out) shared by all rows, or (..., N_in, N_out) one per
    row of the input (biases likewise (N_out,) or (..., N_out)). GELU between
    layers, none after the last.
    """
    layers = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in params))
    x = h
    for i, name in enumerate(layers):
        w, b = params[f"{name}.weight"], params[f"{name}.bias"]
        x = (x[..., None, :] @ w)[..., 0, :] if w.dim() > 2 else x @ w   # (..., N_out)
        x = x + b
        if i < len(layers) - 1:
            x = F.gelu(x)
    return x


def _key(name: str) -> str:
    # ParameterDict keys may not contain '.', so 'head.0.weight' is stored as 'head_0_weight'.
    return name.replace(".", "_")


class SharedLayers(nn.Module):
    """Θb: the encoder and the head's shared layers. (B, L) items -> (B, L, D) h, the adaptive layers' input."""

    def __init__(self, num_items: int, spec: ModelSpec, generator: torch.Generator):
        super().__init__()
        self.encoder = make_encoder(num_items, spec)
        self.shared_head = nn.ModuleList()
        for _ in head_layer_names(spec)[0]:
            layer = nn.Linear(spec.hidden, spec.hidden)
            w, b = init_linear(spec.hidden, spec.hidden, generator)
            with torch.no_grad():
                layer.weight.copy_(w.T)
                layer.bias.copy_(b)
            self.shared_head.append(layer)

    @property
    def item_emb(self) -> torch.Tensor:
        return self.encoder.item_emb.weight

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        x = self.encoder(seq)
        for layer in self.shared_head:
            x = F.gelu(layer(x))
        return x


class PrototypeModel(nn.Module):
    """A prototype model (PM): Θb + the prototype's Θc, trained end to end before the editor."""

    def __init__(self, num_items: int, spec: ModelSpec, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.shared = SharedLayers(num_items, spec, gen)
        self.names = param_names(adaptive_shapes(spec))
        params = {}
        for layer, (n_in, n_out) in adaptive_shapes(spec).items():
            params[f"{layer}.weight"], params[f"{layer}.bias"] = init_linear(n_in, n_out, gen)
        self.head = nn.ParameterDict({_key(k): nn.Parameter(v) for k, v in params.items()})

    def head_params(self) -> dict[str, torch.Tensor]:
        """Θc keyed '<layer>.weight' (N_in, N_out) / '<layer>.bias' (N_out,), layers in order."""
        return {k: self.head[_key(k)] for k in self.names}

    def user_vectors(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, D) user vector after every prefix."""
        return adaptive_forward(self.shared(seq), self.head_params())
