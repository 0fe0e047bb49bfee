"""Models: the character-level encoder-decoder baseline and the decoder BLT shares with it.

Every model implements `encode(src, src_lens) -> Memory` and
`decoder(tokens, memory) -> logits`, which is all training and decoding use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bltlab.config import Config
from bltlab.layers import Attention, Block, PositionSignal, Rotary, key_padding_mask


@dataclass
class ModelConfig(Config):
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


def positions(lengths: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Positions 0..size-1, and each row's distance from every position to its end."""
    pos = torch.arange(size, device=lengths.device)
    return pos, (lengths[:, None] - 1 - pos).clamp(min=0)


def add_positions(x: Tensor, pos: Tensor, to_end: Tensor, signal: PositionSignal,
                  end_signal: PositionSignal | None) -> Tensor:
    """Add the additive position signal of `pos`, and with `end_signal` (the decoder's
    own code, for from-end) that of the distance to the end; RoPE adds nothing here."""
    for sig, p in ((signal, pos), (end_signal, to_end)):
        e = sig.embed(p) if sig is not None else None
        if e is not None:
            x = x + e
    return x


class Decoder(nn.Module):
    """Autoregressive decoder: causal self-attention, cross-attention to memory, tied head."""

    def __init__(self, cfg: ModelConfig, embed: nn.Embedding):
        super().__init__()
        head_dim = cfg.d_model // cfg.nhead
        self.embed = embed
        self.pos = PositionSignal(cfg.pos_encoding, cfg.d_model, head_dim, cfg.max_len)
        relative = getattr(cfg, "relative_values", False) and cfg.pos_encoding == "rope"
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout, cross=True,
                  relative_values=relative)
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

    def encode(self, batch: dict[str, Tensor]) -> Memory:
        src, src_lens = batch["src"], batch["src_lens"]
        size = src.shape[1]
        pos, to_end = positions(src_lens, size)
        x = add_positions(self.embed(src), pos, to_end, self.pos,
                          self.decoder.pos if self.cfg.from_end else None)
        mask = key_padding_mask(src_lens, size) if bool((src_lens < size).any()) else None
        rot = self.pos.rotary(pos)
        for block in self.encoder:
            x = block(x, mask=mask, rot=rot)
        return Memory(self.ln_enc(x), mask, self.pos.rotary(to_end if self.cfg.from_end else pos))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Teacher-forced logits for `batch["tgt_in"]`."""
        return self.decoder(batch["tgt_in"], self.encode(batch))


@dataclass
class BLTConfig(ModelConfig):
    """The BLT's size: local encoder, pooling, global transformer, decoder."""

    vocab_size: int = 260
    num_decoder_layers: int = 1
    num_local_layers: int = 1
    num_global_layers: int = 2
    global_factor: int = 2  # global width = k·d_model; each patch reaches the decoder as k vectors
    pooling: str = "project"  # project: in-patch position slots + linear; cross: k queries
    slots: int = 2  # cross pooling: query slots per patch
    max_patch_len: int = 15  # project pooling: position slots; the longest patch allowed
    ngram_sizes: list[int] = field(default_factory=lambda: [1, 2, 3])
    ngram_buckets: int = 4096
    ngram_init_std: float | None = 0.0  # 0: zeros (an unseen n-gram adds nothing); None: d**-0.5
    decoder_memory: str = "patches"  # patches, or bytes (the hourglass ablation)
    relative_values: bool = True  # decoder cross-attention also returns (t − key position)


class BLT(nn.Module):
    """Byte Latent Transformer encoder-decoder.

    Bytes (+ hashed n-gram embeddings, summed) -> local encoder over bytes -> pooling
    into one vector per patch that keeps the order of its bytes -> global transformer
    over patches -> byte decoder cross-attending to the patch states. Patches come as
    index tensors (each byte's patch and in-patch position); nothing loops over rows
    or patches. Cross-attention keys carry, with RoPE and `from_end`, each patch's
    distance from its last byte to the end of the input.

    As in the paper, the global transformer is wider than the byte layers: at width
    k·d_model (k = `global_factor`) each patch state is k vectors of the byte width
    (position signals are added to each), and the decoder cross-attends to all n·k of
    them, so a patch passes k times more to the decoder while the global model still
    runs over n patches.
    """

    def __init__(self, cfg: BLTConfig):
        super().__init__()
        if cfg.pooling not in ("project", "cross"):
            raise ValueError(f"pooling must be project or cross, got {cfg.pooling!r}")
        if cfg.decoder_memory not in ("patches", "bytes"):
            raise ValueError(f"decoder_memory must be patches or bytes, got "
                             f"{cfg.decoder_memory!r}")
        if cfg.global_factor < 1:
            raise ValueError(f"global_factor must be at least 1, got {cfg.global_factor}")
        self.cfg, self.k = cfg, cfg.global_factor
        wide = self.k * cfg.d_model
        d, head_dim = cfg.d_model, cfg.d_model // cfg.nhead
        block = lambda: Block(d, cfg.nhead, cfg.dim_feedforward, cfg.dropout)  # noqa: E731
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.ngram_embeds = nn.ModuleList(nn.Embedding(cfg.ngram_buckets, d)
                                          for _ in cfg.ngram_sizes)
        self.pos = PositionSignal(cfg.pos_encoding, d, head_dim, cfg.max_len,
                                  project=cfg.from_end and cfg.pos_encoding == "sinusoidal")
        self.local = nn.ModuleList(block() for _ in range(cfg.num_local_layers))
        self.ln_local = nn.LayerNorm(d)
        if cfg.pooling == "project":
            self.pool = nn.Linear(cfg.max_patch_len * d, wide)
        else:
            self.slot_embed = nn.Parameter(torch.zeros(cfg.slots, d))
            self.ln_pool = nn.LayerNorm(d)
            self.pool_attn = Attention(d, cfg.nhead, cfg.dropout, cross=True)
            self.pool = nn.Linear(cfg.slots * d, wide)
        self.global_blocks = nn.ModuleList(  # same head size as the byte layers
            Block(wide, cfg.nhead * self.k, cfg.dim_feedforward * self.k, cfg.dropout)
            for _ in range(cfg.num_global_layers))
        self.ln_global = nn.LayerNorm(wide)
        self.decoder = Decoder(cfg, self.embed)
        self.apply(init_weights)
        if cfg.ngram_init_std is not None:  # a rarely seen n-gram then adds little noise
            for table in self.ngram_embeds:
                nn.init.normal_(table.weight, std=cfg.ngram_init_std)

    def embed_bytes(self, batch: dict[str, Tensor]) -> Tensor:
        x = self.embed(batch["src"])
        for i, table in enumerate(self.ngram_embeds):
            x = x + table(batch["ngrams"][..., i])
        return x

    def pool_project(self, x: Tensor, batch: dict[str, Tensor], n: int) -> Tensor:
        """Each byte into slot (its patch, its in-patch position); a patch's slots,
        concatenated in order, go through one linear map."""
        b, size, d = x.shape
        if int(batch["in_patch"].max()) >= self.cfg.max_patch_len:
            raise ValueError(f"a patch is longer than max_patch_len={self.cfg.max_patch_len}")
        rows = torch.arange(b, device=x.device)[:, None].expand(b, size)
        slots = x.new_zeros(b, n + 1, self.cfg.max_patch_len, d)  # patch n: padding
        slots = slots.index_put((rows, batch["patch"], batch["in_patch"]), x)
        return self.pool(slots[:, :n].flatten(2))

    def pool_cross(self, x: Tensor, batch: dict[str, Tensor], n: int) -> Tensor:
        """k query slots per patch, started from the mean of its bytes, attend only to
        the bytes of their own patch; their outputs, concatenated, are linearly mapped."""
        b, size, d = x.shape
        k = self.cfg.slots
        patch = batch["patch"]
        sums = x.new_zeros(b, n + 1, d).scatter_add(1, patch[..., None].expand(b, size, d), x)
        counts = torch.zeros(b, n + 1, device=x.device).scatter_add(
            1, patch, torch.ones_like(patch, dtype=x.dtype))
        mean = sums[:, :n] / counts[:, :n, None].clamp(min=1)
        queries = (mean[:, :, None, :] + self.slot_embed).reshape(b, n * k, d)
        query_patch = torch.arange(n, device=x.device).repeat_interleave(k)
        mask = query_patch[None, :, None] == patch[:, None, :]  # (B, n*k, T)
        mask = mask | ~mask.any(-1, keepdim=True)  # padding patches: attend anywhere, unused
        out = queries + self.pool_attn(self.ln_pool(queries), x, mask=mask[:, None])
        return self.pool(out.reshape(b, n, k * d))

    def encode(self, batch: dict[str, Tensor]) -> Memory:
        src_lens, size = batch["src_lens"], batch["src"].shape[1]
        pos, to_end = positions(src_lens, size)
        end_signal = self.decoder.pos if self.cfg.from_end else None
        x = add_positions(self.embed_bytes(batch), pos, to_end, self.pos, end_signal)
        byte_mask = key_padding_mask(src_lens, size)
        for block in self.local:
            x = block(x, mask=byte_mask, rot=self.pos.rotary(pos))
        x = self.ln_local(x)

        n = int(batch["n_patches"].max())
        pooled = (self.pool_project if self.cfg.pooling == "project" else self.pool_cross)(
            x, batch, n)
        patch_pos, patch_to_end = torch.arange(n, device=x.device), batch["patch_to_end"]
        b, k, d = x.shape[0], self.k, self.cfg.d_model
        h = add_positions(pooled.view(b, n, k, d), patch_pos[:, None],
                          patch_to_end[..., None], self.pos, end_signal).view(b, n, k * d)
        patch_mask = key_padding_mask(batch["n_patches"], n)
        for block in self.global_blocks:
            h = block(h, mask=patch_mask, rot=self.pos.rotary(patch_pos))
        h = self.ln_global(h)
        if self.cfg.decoder_memory == "bytes":  # hourglass ablation: back to bytes
            per_patch = h.view(b, n, k, d).sum(2)
            gathered = per_patch.gather(1, batch["patch"].clamp(max=n - 1)[..., None].expand_as(x))
            keys = to_end if self.cfg.from_end else pos
            return Memory(x + gathered, byte_mask, self.pos.rotary(keys))
        keys = (patch_to_end if self.cfg.from_end else patch_pos[None].expand(b, n))
        slots_mask = key_padding_mask(batch["n_patches"] * k, n * k)
        return Memory(h.view(b, n * k, d), slots_mask,
                      self.pos.rotary(keys.repeat_interleave(k, dim=1)))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.decoder(batch["tgt_in"], self.encode(batch))


CONFIGS = {"char": ModelConfig, "blt": BLTConfig}


def build_model(mode: str, cfg: ModelConfig) -> nn.Module:
    """The model for a mode: 'char' (the baseline) or 'blt'."""
    if mode == "char":
        return CharTransformer(cfg)
    if mode == "blt":
        return BLT(cfg)
    raise ValueError(f"unknown mode {mode!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
