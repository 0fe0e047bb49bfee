"""Models: the character-level encoder-decoder baseline and the decoder BLT shares with it.

Every model implements `encode(src, src_lens) -> Memory` and
`decoder(tokens, memory) -> logits`, which is all training and decoding use.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bltlab.layers import Block, PositionSignal, Rotary, key_padding_mask


@dataclass
class ModelConfig:
    """Size and position scheme of an encoder-decoder; serialised into checkpoints."""

    vocab_size: int = 0
    d_model: int = 64
    nhead: int = 4
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    dim_feedforward: int = 256
    dropout: float = 0.0
    max_len: int = 512
    pos_encoding: str = "rope"
    from_end: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass
class Memory:
    """What the decoder cross-attends to: states (B, S, C), their mask, their RoPE tables."""

    states: Tensor
    mask: Tensor | None
    rot: Rotary | None


def init_weights(module: nn.Module) -> None:
    """GPT-2's small normal initialisation for linear layers; embeddings get std d**-0.5.

    Unit-norm embedding rows matter for copying tasks: a character seen a handful of
    times in training barely moves from its initial vector, and only a vector of the
    same size as the trained ones is copied as itself through the tied output head
    (at std 0.02 rare characters collapsed onto one another; see README).
    """
    if isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=module.embedding_dim ** -0.5)
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class Decoder(nn.Module):
    """Autoregressive decoder: causal self-attention, cross-attention to memory, tied head."""

    def __init__(self, cfg: ModelConfig, embed: nn.Embedding):
        super().__init__()
        head_dim = cfg.d_model // cfg.nhead
        self.embed = embed
        self.pos = PositionSignal(cfg.pos_encoding, cfg.d_model, head_dim, cfg.max_len)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout, cross=True)
            for _ in range(cfg.num_decoder_layers))
        self.ln = nn.LayerNorm(cfg.d_model)

    def forward(self, tokens: Tensor, memory: Memory, cache: list[dict] | None = None,
                start: int = 0) -> Tensor:
        """Logits for `tokens` at positions start.. ; with `cache` (one dict per block,
        filled as it goes) only the new tokens are fed, one step at a time."""
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.embed(tokens)
        e = self.pos.embed(pos)
        if e is not None:
            x = x + e
        rot = self.pos.rotary(pos)
        for i, block in enumerate(self.blocks):
            x = block(x, is_causal=tokens.shape[1] > 1, rot=rot, memory=memory.states,
                      memory_mask=memory.mask, rot_mem=memory.rot,
                      cache=cache[i] if cache is not None else None)
        return F.linear(self.ln(x), self.embed.weight)

    def new_cache(self) -> list[dict]:
        """An empty key/value cache for incremental decoding."""
        return [{} for _ in self.blocks]


class CharTransformer(nn.Module):
    """Character-level encoder-decoder Transformer (the baseline).

    With `from_end`, each input position also carries its distance to the end of the
    input, in the decoder's own position code, so that output step t finds input
    position L-1-t by matching equal codes: learned and sinusoidal schemes add the
    decoder's signal for L-1-i to the encoder input (a sinusoidal encoder then passes
    its usual signal through a learned map, so the two stay apart); RoPE rotates the
    keys of cross-attention by L-1-i, so the match is at relative offset zero.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        head_dim = cfg.d_model // cfg.nhead
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = PositionSignal(cfg.pos_encoding, cfg.d_model, head_dim, cfg.max_len,
                                  project=cfg.from_end and cfg.pos_encoding == "sinusoidal")
        self.encoder = nn.ModuleList(
            Block(cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout)
            for _ in range(cfg.num_encoder_layers))
        self.ln_enc = nn.LayerNorm(cfg.d_model)
        self.decoder = Decoder(cfg, self.embed)
        self.apply(init_weights)

    def encode(self, src: Tensor, src_lens: Tensor) -> Memory:
        size = src.shape[1]
        pos = torch.arange(size, device=src.device)
        to_end = (src_lens[:, None] - 1 - pos).clamp(min=0)
        x = self.embed(src)
        e = self.pos.embed(pos)
        if e is not None:
            x = x + e
        end = self.decoder.pos.embed(to_end) if self.cfg.from_end else None
        if end is not None:
            x = x + end
        mask = key_padding_mask(src_lens, size) if bool((src_lens < size).any()) else None
        rot = self.pos.rotary(pos)
        for block in self.encoder:
            x = block(x, mask=mask, rot=rot)
        return Memory(self.ln_enc(x), mask, self.pos.rotary(to_end if self.cfg.from_end else pos))

    def forward(self, src: Tensor, src_lens: Tensor, tgt_in: Tensor) -> Tensor:
        return self.decoder(tgt_in, self.encode(src, src_lens))


def build_model(mode: str, cfg: ModelConfig) -> nn.Module:
    """The model for a mode ('char' now; 'blt' joins with the BLT issue)."""
    if mode == "char":
        return CharTransformer(cfg)
    raise ValueError(f"unknown mode {mode!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
