"""The Parameter Editor (PE) of Persona, Eq. 5, 6 and 13, as a bank of P editors.

    e_R = E(X_R)                       encoder over the device's real-time window: [mean, last] of its item
                                       embeddings, or [a GRU's state after the window, last] (``encoder``)
    e^n = L^n(e_R)                     a linear layer per adaptive layer n
    {e^n} <- Ω_seq({e^n})              CLKT: a GRU over the layer index (Eq. 13), switchable
    G^n = g^n(e^n)                     a head per layer: the layer's weights and bias edit
    K^n = Clip(G^n, -T, T) + Θ^n       the edited layer (Eq. 6)

Every weight carries a leading prototype dimension P, so Persona (m)'s N_M
group editors run on one window in one batched operation (Eq. 11); Persona (s)
is the bank with P = 1. Every part is a registered parameter, so the heads are
trained and saved with the rest (the public research code kept them in a plain
list). A low-rank head option (``rank``) makes G^n = U V for large layers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..scenario.schema import PersonaSpec


def _linear(p: int, n_in: int, n_out: int, gen: torch.Generator) -> tuple[nn.Parameter, nn.Parameter]:
    """torch.nn.Linear's default initialisation, P times: weight (P, n_in, n_out), bias (P, n_out)."""
    bound = 1.0 / math.sqrt(n_in)
    w = (torch.rand(p, n_in, n_out, generator=gen) * 2 - 1) * bound
    b = (torch.rand(p, n_out, generator=gen) * 2 - 1) * bound
    return nn.Parameter(w), nn.Parameter(b)


def _apply(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (P, B, n_in) @ w (P, n_in, n_out) + b (P, n_out) -> (P, B, n_out)."""
    return torch.baddbmm(b[:, None, :], x, w)


def _gru_step(x: torch.Tensor, h: torch.Tensor, wi: torch.Tensor, bi: torch.Tensor, wh: torch.Tensor,
              bh: torch.Tensor) -> torch.Tensor:
    """One GRU cell step, P cells at once: x (P, B, n_in), h (P, B, H) -> (P, B, H); gates r, z, n stacked."""
    ir, iz, in_ = _apply(x, wi, bi).chunk(3, dim=-1)
    hr, hz, hn = _apply(h, wh, bh).chunk(3, dim=-1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    return (1 - z) * torch.tanh(in_ + r * hn) + z * h


class EditorBank(nn.Module):
    """P Parameter Editors for the adaptive layers ``shapes`` ({layer: (N_in, N_out)}) of a D-dim model."""

    def __init__(self, hidden: int, shapes: dict[str, tuple[int, int]], spec: PersonaSpec, prototypes: int = 1,
                 seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        P, H = prototypes, spec.editor_hidden
        self.hidden, self.spec = hidden, spec
        self.prototypes, self.clip, self.rank = P, spec.clip, spec.rank
        self.shapes = dict(shapes)
        self.layers = list(shapes)
        # E: [mean, last] of the window's item embeddings -> e_R, a 2-layer neck.
        self.enc1_w, self.enc1_b = _linear(P, 2 * hidden, H, gen)
        self.enc2_w, self.enc2_b = _linear(P, H, H, gen)
        # L^n, one per adaptive layer.
        self.proj_w = nn.ParameterList()
        self.proj_b = nn.ParameterList()
        for _ in self.layers:
            w, b = _linear(P, H, H, gen)
            self.proj_w.append(w)
            self.proj_b.append(b)
        # Ω_seq: a GRU cell run over the layer index (gates r, z, n stacked on the last dim).
        self.clkt = spec.clkt
        if spec.clkt:
            self.gru_wi, self.gru_bi = _linear(P, H, 3 * H, gen)
            self.gru_wh, self.gru_bh = _linear(P, H, 3 * H, gen)
        # g^n: start near Θ (small, not zero, so every part gets gradients from the first step).
        self.head_w = nn.ParameterList()
        self.head_b = nn.ParameterList()
        for name in self.layers:
            n_in, n_out = shapes[name]
            w = torch.randn(P, H, self.edit_width(n_in, n_out), generator=gen) * 1e-3
            b = torch.zeros(P, self.edit_width(n_in, n_out))
            if self.rank is not None:   # V starts as a random projection so U gets gradients
                r = self.rank
                b[:, n_in * r: n_in * r + r * n_out] = torch.randn(P, r * n_out, generator=gen) / math.sqrt(r)
            self.head_w.append(nn.Parameter(w))
            self.head_b.append(nn.Parameter(b))
        # A GRU over the window's items, oldest first, in place of their mean (drawn last, so the default
        # encoder's initialisation is unchanged).
        self.encoder = spec.encoder
        if spec.encoder == "gru":
            self.win_wi, self.win_bi = _linear(P, hidden, 3 * hidden, gen)
            self.win_wh, self.win_bh = _linear(P, hidden, 3 * hidden, gen)

    def edit_width(self, n_in: int, n_out: int) -> int:
        """Outputs of g^n: the full matrix and bias, or U (N_in×r), V (r×N_out) and the bias."""
        if self.rank is None:
            return n_in * n_out + n_out
        return n_in * self.rank + self.rank * n_out + n_out

    def _features(self, window_emb: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """window_emb (B, W, D), mask (B, W) True on real items (left-aligned, newest last) -> N_l × (P, B, H)."""
        last_idx = mask.long().sum(1).clamp(min=1) - 1                       # (B,)
        last = window_emb[torch.arange(len(last_idx)), last_idx].expand(self.prototypes, -1, -1)   # (P, B, D)
        x = torch.cat([self._summary(window_emb, mask), last], dim=-1)       # (P, B, 2D)
        e_r = F.gelu(_apply(F.gelu(_apply(x, self.enc1_w, self.enc1_b)), self.enc2_w, self.enc2_b))   # (P, B, H)
        feats = [_apply(e_r, w, b) for w, b in zip(self.proj_w, self.proj_b)]  # e^n, Eq. 5
        if not self.clkt:
            return feats
        out, h = [], torch.zeros_like(feats[0])
        for x_n in feats:                                                    # layer n+1 sees layer n (Eq. 13)
            h = _gru_step(x_n, h, self.gru_wi, self.gru_bi, self.gru_wh, self.gru_bh)
            out.append(h)
        return out

    def _summary(self, window_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, W, D), (B, W) -> (P, B, D): the items' mean, or the GRU's state after the last real item."""
        if self.encoder == "gru":
            h = window_emb.new_zeros(self.prototypes, *window_emb.shape[::2])          # (P, B, D)
            for t in range(window_emb.shape[1]):                             # padding columns leave h as it is,
                x_t = window_emb[:, t].expand(self.prototypes, -1, -1)       # so any width gives the same bits
                h = torch.where(mask[None, :, t, None], _gru_step(x_t, h, self.win_wi, self.win_bi, self.win_wh,
                                                                  self.win_bh), h)
            return h
        m = mask[..., None].float()                                          # (B, W, 1)
        total = (window_emb * m).cumsum(1)[:, -1]                            # (B, D): a running sum in item order
        mean = total / m.sum(1).clamp(min=1.0)                               # has the same bits at any width or
        return mean.expand(self.prototypes, -1, -1)                          # batch (.sum's grouping varies with both)

    def edits(self, window_emb: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Clipped edits Clip(G^n, -T, T) of every prototype: '<layer>.weight' (P, B, N_in, N_out), '.bias' (P, B, N_out)."""
        return self._edits(self._features(window_emb, mask))

    def codes(self, window_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The per-layer features e^n (after CLKT) side by side: (P, B, N_l × H), what the heads g^n read."""
        return torch.cat(self._features(window_emb, mask), dim=-1)

    def edits_from_codes(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """``edits`` from codes (P, B, N_l × H), e.g. a k-means centre's."""
        return self._edits([c.contiguous() for c in codes.chunk(len(self.layers), dim=-1)])

    def _edits(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, feat, w, b in zip(self.layers, features, self.head_w, self.head_b):
            n_in, n_out = self.shapes[name]
            g = _apply(feat, w, b)                                           # (P, B, edit_width)
            if self.rank is None:
                g = g.clamp(-self.clip, self.clip) if g.requires_grad else g.clamp_(-self.clip, self.clip)
                out[f"{name}.weight"] = g[..., : n_in * n_out].unflatten(-1, (n_in, n_out))   # views of g
                out[f"{name}.bias"] = g[..., -n_out:]
                continue
            r = self.rank
            u = g[..., : n_in * r].unflatten(-1, (n_in, r))                  # (P, B, N_in, r)
            v = g[..., n_in * r: n_in * r + r * n_out].unflatten(-1, (r, n_out))   # (P, B, r, N_out)
            out[f"{name}.weight"] = (u @ v).clamp(-self.clip, self.clip)     # (P, B, N_in, N_out)
            out[f"{name}.bias"] = g[..., -n_out:].clamp(-self.clip, self.clip)
        return out

    @classmethod
    def stack(cls, banks: list["EditorBank"]) -> "EditorBank":
        """One bank holding every bank's editors, in order (e.g. the N_M group PEs)."""
        first = banks[0]
        out = cls(first.hidden, first.shapes, first.spec, sum(b.prototypes for b in banks))
        states = [b.state_dict() for b in banks]
        out.load_state_dict({k: torch.cat([s[k] for s in states]) for k in states[0]})
        return out


def apply_edits(prototypes: dict[str, torch.Tensor], edits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """K^n = edit + Θ^n: edits (P, B, ...) plus the P prototypes' weights (P, ...)."""
    return {k: e + prototypes[k][:, None] for k, e in edits.items()}


def edit_norm(edits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Frobenius norm of the whole clipped edit (P, B): the size Persona (m) minimises (Eq. 12)."""
    return sum(e.flatten(2).pow(2).sum(-1) for e in edits.values()).sqrt()


def flat_edits(edits: dict[str, torch.Tensor]) -> torch.Tensor:
    """The edit of every layer as one vector (P, B, F): what the initial partition clusters (Eq. 9)."""
    return torch.cat([e.flatten(2) for e in edits.values()], dim=-1)
