"""Building blocks shared by both models: position signals, attention, pre-norm blocks.

Attention always goes through `F.scaled_dot_product_attention`; masks are boolean
(True = may attend) and broadcast as (B, 1, Tq, Tk). Settings are checked by the
configs (bltlab.config) before a model is built.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Rotary = tuple[Tensor, Tensor]  # RoPE tables, full head width (see `rotary`)


def sinusoid(pos: Tensor, dim: int) -> Tensor:
    """Fixed sine/cosine features of integer positions: (...,) -> (..., dim)."""
    freqs = torch.exp(torch.arange(0, dim, 2, device=pos.device) * (-math.log(10000.0) / dim))
    angles = pos.float().unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def rotary(pos: Tensor, head_dim: int, base: float = 10000.0) -> Rotary:
    """RoPE tables at positions `pos` (T,) or (B, T), shaped to broadcast over heads: the
    cosine of each channel pair's angle (for both channels), and its sine (negated for
    the first channel), so a rotation is two products (`apply_rotary`)."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, device=pos.device).float() / head_dim)
    angles = pos.float().unsqueeze(-1) * inv
    if angles.dim() == 3:  # (B, T, hd/2) -> (B, 1, T, hd/2)
        angles = angles.unsqueeze(1)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1)


def halves(rot: Rotary) -> Rotary:
    """The cos and sin of each channel pair's angle (hd/2 each)."""
    half = rot[0].shape[-1] // 2
    return rot[0][..., :half], rot[1][..., half:]


def apply_rotary(x: Tensor, rot: Rotary) -> Tensor:
    """Rotate pairs of channels (i, i + hd/2) of x (B, H, T, hd) by the angles in `rot`:
    (x1 cos - x2 sin, x2 cos + x1 sin)."""
    cos, sin = rot
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat([x2, x1], dim=-1) * sin).type_as(x)


class PositionSignal(nn.Module):
    """One position signal: added to the embeddings (learned, sinusoidal) or rotary (rope).

    `embed(pos)` gives the additive signal (None for rope); `rotary(pos)` the RoPE tables
    (None otherwise). A learned map follows the sinusoid when `project` is set, so that
    two sinusoidal signals (position and distance to the end) stay distinguishable.
    """

    def __init__(self, kind: str, d_model: int, head_dim: int, max_len: int,
                 project: bool = False):
        super().__init__()
        self.kind, self.d_model, self.head_dim = kind, d_model, head_dim
        self.table = nn.Embedding(max_len, d_model) if kind == "learned" else None
        self.proj = nn.Linear(d_model, d_model, bias=False) if project else None

    def embed(self, pos: Tensor) -> Tensor | None:
        if self.kind == "learned":
            return self.table(pos)
        if self.kind == "sinusoidal":
            s = sinusoid(pos, self.d_model)
            return self.proj(s) if self.proj is not None else s
        return None

    def rotary(self, pos: Tensor) -> Rotary | None:
        return rotary(pos, self.head_dim) if self.kind == "rope" else None


class Attention(nn.Module):
    """Multi-head self- or cross-attention with optional RoPE on queries and keys.

    `relative_values` (cross-attention with RoPE): each key also carries the cos/sin of
    its position as extra value channels; turned by the query's position after the
    attention, they become the cos/sin of (query position − key position) averaged
    under the attention weights, which a linear map adds to the output. A decoder step
    attending to a patch thereby learns how far into that patch it is.
    """

    def __init__(self, d_model: int, nhead: int, dropout: float, cross: bool = False,
                 relative_values: bool = False):
        super().__init__()
        self.nhead, self.dropout, self.cross = nhead, dropout, cross
        if cross:
            self.q = nn.Linear(d_model, d_model)
            self.kv = nn.Linear(d_model, 2 * d_model)
        else:
            self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.relative = nn.Linear(d_model, d_model) if relative_values else None

    def _heads(self, t: Tensor) -> Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.nhead, c // self.nhead).transpose(1, 2)

    def forward(self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None,
                is_causal: bool = False, rot_q: Rotary | None = None,
                rot_k: Rotary | None = None, cache: dict | None = None) -> Tensor:
        """With `cache` (incremental decoding), cross-attention computes the memory's keys
        and values once, and self-attention appends this call's keys and values."""
        b, n, c = x.shape
        if self.cross:
            q = self._heads(self.q(x))
            if cache is not None and "k" in cache:
                k, v = cache["k"], cache["v"]
            else:
                k, v = (self._heads(t) for t in self.kv(memory).split(c, dim=-1))
                k = apply_rotary(k, rot_k) if rot_k is not None else k
                if self.relative is not None and rot_k is not None:
                    v = torch.cat([v, *(t.expand(*k.shape[:-1], -1) for t in halves(rot_k))],
                                  dim=-1)
        else:
            q, k, v = (self._heads(t) for t in self.qkv(x).split(c, dim=-1))
            k = apply_rotary(k, rot_k) if rot_k is not None else k
            if cache is not None and "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
        if cache is not None:
            cache["k"], cache["v"] = k, v
        q = apply_rotary(q, rot_q) if rot_q is not None else q
        head_dim = c // self.nhead
        if v.shape[-1] > head_dim and torch.backends.cuda.flash_sdp_enabled():
            # zero channels leave the scores as they are, and one head width lets SDPA
            # take its fused kernel (the flag covers CPU too; FLOP counts rule it out
            # and see the products of the math path, unpadded)
            pad = v.shape[-1] - head_dim
            q, k = F.pad(q, (0, pad)), F.pad(k, (0, pad))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0, scale=head_dim ** -0.5)
        out = self.out(y[..., :head_dim].transpose(1, 2).reshape(b, n, c))
        if y.shape[-1] > head_dim:  # cos/sin of key positions, averaged by attention
            cos_k, sin_k = y[..., head_dim:].chunk(2, dim=-1)
            cos_q, sin_q = halves(rot_q)
            rel = torch.cat([cos_q * cos_k + sin_q * sin_k, sin_q * cos_k - cos_q * sin_k], -1)
            out = out + self.relative(rel.transpose(1, 2).reshape(b, n, c))
        return out


class MLP(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d_model, dim_feedforward)
        self.proj = nn.Linear(dim_feedforward, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm Transformer block: self-attention, optional cross-attention, MLP."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 cross: bool = False, relative_values: bool = False):
        super().__init__()
        self.ln_self = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, nhead, dropout)
        self.ln_cross = nn.LayerNorm(d_model) if cross else None
        self.cross_attn = (Attention(d_model, nhead, dropout, cross=True,
                                     relative_values=relative_values) if cross else None)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, dim_feedforward, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, is_causal: bool = False,
                rot: Rotary | None = None, memory: Tensor | None = None,
                memory_mask: Tensor | None = None, rot_mem: Rotary | None = None,
                cache: dict | None = None) -> Tensor:
        """`cache`, for incremental decoding, holds this block's self and cross key/values."""
        self_cache = cache.setdefault("self", {}) if cache is not None else None
        x = x + self.drop(self.self_attn(self.ln_self(x), mask=mask, is_causal=is_causal,
                                         rot_q=rot, rot_k=rot, cache=self_cache))
        if self.cross_attn is not None:
            cross_cache = cache.setdefault("cross", {}) if cache is not None else None
            x = x + self.drop(self.cross_attn(self.ln_cross(x), memory, mask=memory_mask,
                                              rot_q=rot, rot_k=rot_mem, cache=cross_cache))
        return x + self.mlp(self.ln_mlp(x))


def utf8_roles() -> Tensor:
    """The UTF-8 role of each byte value: 0 ASCII, 1 continuation, 2/3/4 the lead byte of
    a 2/3/4-byte character, 5 never valid."""
    b = torch.arange(256)
    return torch.where(b < 0x80, 0, torch.where(b < 0xC0, 1, torch.where(
        b < 0xE0, 2, torch.where(b < 0xF0, 3, torch.where(b < 0xF8, 4, 5)))))


class Utf8ByteEmbedding(nn.Module):
    """Byte vectors built from parts every byte shares: its UTF-8 role and its 8 bits
    (E[b] = role[r(b)] + Σ_i ±w_i), so a byte never seen in training still has a trained
    vector, and the tied output head can name it bit by bit. The `specials` ids before
    the bytes keep vectors of their own."""

    def __init__(self, specials: int, d_model: int):
        super().__init__()
        self.specials = nn.Embedding(specials, d_model)
        self.roles = nn.Embedding(6, d_model)
        self.bits = nn.Linear(8, d_model, bias=False)
        signs = 2.0 * ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).float() - 1.0
        self.register_buffer("bit_signs", signs, persistent=False)
        self.register_buffer("role_ids", utf8_roles(), persistent=False)
        self.fixed: Tensor | None = None  # see `fixed_weights`

    def reset_bits(self) -> None:
        """Bits at a scale that gives their sum about unit norm, like a table's rows."""
        nn.init.normal_(self.bits.weight, std=(8 * self.bits.out_features) ** -0.5)

    @property
    def weight(self) -> Tensor:
        """The (specials + 256, d) matrix of all vectors (also the output head's), built
        from the parameters at every call; without gradients inside `fixed_weights`,
        built once."""
        if self.fixed is not None and not torch.is_grad_enabled():
            return self.fixed
        bytes_ = self.roles(self.role_ids) + self.bits(self.bit_signs)
        return torch.cat([self.specials.weight, bytes_])

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight)


@contextlib.contextmanager
def fixed_weights(model: nn.Module) -> Iterator[None]:
    """Within it the model's UTF-8 byte vectors are built once, not at every call:
    decoding reads them at every step, and FLOPs count them per model, not per row.
    Nothing may change the parameters inside. (A cache keyed on tensor versions would go
    stale: the fused optimizer updates weights without bumping them.)"""
    tables = [m for m in model.modules() if isinstance(m, Utf8ByteEmbedding)]
    with torch.no_grad():
        for table in tables:
            table.fixed = table.weight
    try:
        yield
    finally:
        for table in tables:
            table.fixed = None


class KVCache:
    """Keys and values of incremental decoding, one dict per decoder block: "self" (this
    row's output steps so far) and "cross" (the memory's, computed at the first step).
    Every tensor in it is per row (batch first), so `select` can keep, reorder or repeat
    rows."""

    def __init__(self, blocks: int):
        self.blocks: list[dict[str, dict[str, Tensor]]] = [{} for _ in range(blocks)]

    def __getitem__(self, i: int) -> dict:
        return self.blocks[i]

    def select(self, rows: Tensor) -> KVCache:
        out = KVCache(0)
        out.blocks = [{part: {name: t.index_select(0, rows) for name, t in kv.items()}
                       for part, kv in block.items()} for block in self.blocks]
        return out


def key_padding_mask(lengths: Tensor, size: int) -> Tensor:
    """(B,) lengths -> (B, 1, 1, size) boolean mask, True on real positions."""
    return (torch.arange(size, device=lengths.device) < lengths[:, None])[:, None, None, :]
