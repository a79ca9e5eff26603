"""The Parameter Editor (PE) of Persona, Eq. 5, 6 and 13.

    e_R = E(X_R)                       encoder over the device's real-time window
    e^n = L^n(e_R)                     a linear layer per adaptive layer n
    {e^n} <- Ω_seq({e^n})              CLKT: a GRU over the layer index (Eq. 13), switchable
    G^n = g^n(e^n)                     a head per layer: the layer's weights and bias edit
    K^n = Clip(G^n, -T, T) + Θ^n       the edited layer (Eq. 6)

Every part is a registered module, so the heads are trained and saved with the
rest (the public research code kept them in a plain list).
"""
from __future__ import annotations

import torch
from torch import nn

from .config import PersonaSpec
from .models import HEAD_LAYERS, head_shapes


class WindowEncoder(nn.Module):
    """E: the window's item embeddings (frozen, from Θb) -> e_R (B, H)."""

    def __init__(self, hidden: int, editor_hidden: int):
        super().__init__()
        self.neck = nn.Sequential(
            nn.Linear(2 * hidden, editor_hidden), nn.GELU(), nn.Linear(editor_hidden, editor_hidden), nn.GELU()
        )

    def forward(self, window_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # window_emb (B, W, D), mask (B, W) True on real items; windows are left-aligned, newest last.
        m = mask[..., None].float()                                     # (B, W, 1)
        mean = (window_emb * m).sum(1) / m.sum(1).clamp(min=1.0)        # (B, D)
        last_idx = mask.long().sum(1).clamp(min=1) - 1                  # (B,)
        last = window_emb[torch.arange(len(last_idx)), last_idx]        # (B, D)
        return self.neck(torch.cat([mean, last], dim=1))                # (B, H)


class ParameterEditor(nn.Module):
    def __init__(self, hidden: int, spec: PersonaSpec):
        super().__init__()
        h = spec.editor_hidden
        self.clip = spec.clip
        self.use_clkt = spec.clkt
        self.shapes = head_shapes(hidden)
        self.encoder = WindowEncoder(hidden, h)
        self.layer_proj = nn.ModuleDict({n.replace(".", "_"): nn.Linear(h, h) for n in HEAD_LAYERS})   # L^n
        self.clkt = nn.GRU(h, h, batch_first=True) if spec.clkt else None                             # Ω_seq
        self.heads = nn.ModuleDict()                                                                   # g^n
        for name, ((n_in, n_out), n_b) in self.shapes.items():
            head = nn.Linear(h, n_in * n_out + n_b)
            nn.init.normal_(head.weight, std=1e-3)   # start near Θ: edits begin small, not zero, so all parts learn
            nn.init.zeros_(head.bias)
            self.heads[name.replace(".", "_")] = head

    def layer_features(self, e_r: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.layer_proj[n.replace(".", "_")](e_r) for n in HEAD_LAYERS]   # N_l × (B, H)
        if self.clkt is not None:
            seq, _ = self.clkt(torch.stack(feats, dim=1))                           # (B, N_l, H): layer n+1 sees layer n
            feats = list(seq.unbind(1))
        return feats

    def edits(self, window_emb: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Clipped edits Clip(G^n, -T, T), keyed '<layer>.weight' (B, N_in, N_out) and '<layer>.bias' (B, N_out)."""
        feats = self.layer_features(self.encoder(window_emb, mask))
        out = {}
        for name, feat in zip(HEAD_LAYERS, feats):
            (n_in, n_out), n_b = self.shapes[name]
            g = self.heads[name.replace(".", "_")](feat)                            # (B, N_in*N_out + N_out)
            g = torch.clamp(g, -self.clip, self.clip)
            out[f"{name}.weight"] = g[:, : n_in * n_out].reshape(-1, n_in, n_out)  # (B, N_in, N_out)
            out[f"{name}.bias"] = g[:, n_in * n_out:]                               # (B, N_out)
        return out


def apply_edits(prototype: dict[str, torch.Tensor], edits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """K^n = edit + Θ^n, per sample: (B, ...) edits broadcast over the prototype's (...)."""
    return {k: edits[k] + prototype[k][None] for k in prototype}


def edit_norm(edits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Frobenius norm of the whole clipped edit per sample (B,): the size Persona (m) minimises."""
    sq = sum(e.flatten(1).pow(2).sum(1) for e in edits.values())
    return sq.sqrt()
