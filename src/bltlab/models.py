"""Models: the character-level encoder-decoder baseline and the BLT, sharing a decoder.

Both are an `EncoderDecoder`: `encode(batch) -> Memory`, `decode(tokens, memory, cache,
start) -> logits`, `new_cache()`, `max_len` and `vocab_size` are all that training and
decoding use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bltlab.config import BLTConfig, ModelConfig
from bltlab.layers import (
    Attention,
    Block,
    KVCache,
    PositionSignal,
    Rotary,
    Utf8ByteEmbedding,
    key_padding_mask,
)


@dataclass
class Memory:
    """What the decoder cross-attends to, every tensor per row (batch first): states
    (B, S, C), their mask (B, 1, 1, S) or None, their RoPE tables (B, 1, S, hd/2) or None."""

    states: Tensor
    mask: Tensor | None
    rot: Rotary | None

    def cat(self, other: Memory) -> Memory:
        """One memory holding this one's vectors, then `other`'s (both masked, both RoPE)."""
        return Memory(torch.cat([self.states, other.states], 1),
                      torch.cat([self.mask, other.mask], -1),
                      tuple(torch.cat(t, 2) for t in zip(self.rot, other.rot)))

    def select(self, rows: Tensor) -> Memory:
        """Keep, reorder or repeat rows."""
        return Memory(self.states.index_select(0, rows),
                      None if self.mask is None else self.mask.index_select(0, rows),
                      None if self.rot is None else tuple(t.index_select(0, rows)
                                                          for t in self.rot))


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


def per_row(pos: Tensor, rows: int) -> Tensor:
    """Positions shared by all rows (T,) as (rows, T); per-row ones pass through."""
    return pos.expand(rows, -1) if pos.dim() == 1 else pos


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

    def __init__(self, cfg: ModelConfig, embed: nn.Module):
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

    def forward(self, tokens: Tensor, memory: Memory, cache: KVCache | None = None,
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


class EncoderDecoder(nn.Module):
    """What both models share: a `Decoder` over `encode(batch)`'s memory."""

    cfg: ModelConfig
    decoder: Decoder

    def encode(self, batch: dict[str, Tensor]) -> Memory:
        raise NotImplementedError

    def decode(self, tokens: Tensor, memory: Memory, cache: KVCache | None = None,
               start: int = 0) -> Tensor:
        """Logits for `tokens` at positions start.. (with `cache`: only the new tokens)."""
        return self.decoder(tokens, memory, cache, start)

    def new_cache(self) -> KVCache:
        """An empty key/value cache for incremental decoding."""
        return KVCache(len(self.decoder.blocks))

    @property
    def max_len(self) -> int:
        """The longest sequence the model takes, in tokens, EOS included."""
        return self.cfg.max_len

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Teacher-forced logits for `batch["tgt_in"]`."""
        return self.decode(batch["tgt_in"], self.encode(batch))


class CharTransformer(EncoderDecoder):
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
        keys = per_row(to_end if self.cfg.from_end else pos, len(src))
        return Memory(self.ln_enc(x), mask, self.pos.rotary(keys))


def holds_any(flags: Tensor, n: int) -> Tensor:
    """(B, T) -> (B, T): True where any of the n positions ending there is flagged."""
    out = flags.clone()
    for k in range(1, min(n, flags.shape[1])):
        out[:, k:] |= flags[:, :-k]
    return out


class BLT(EncoderDecoder):
    """Byte Latent Transformer encoder-decoder.

    Bytes (+ hashed n-gram embeddings, summed; at evaluation an n-gram holding a byte
    never seen in training adds nothing) -> local encoder over bytes -> pooling
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
        self.cfg, self.factor = cfg, cfg.global_factor
        wide = self.factor * cfg.d_model
        d, head_dim = cfg.d_model, cfg.d_model // cfg.nhead
        block = lambda: Block(d, cfg.nhead, cfg.dim_feedforward, cfg.dropout)  # noqa: E731
        self.embed = (nn.Embedding(cfg.vocab_size, d) if cfg.byte_embedding == "table"
                      else Utf8ByteEmbedding(cfg.vocab_size - 256, d,
                                             pairs=cfg.byte_embedding == "utf8-pairs"))
        self.ngram_embeds = nn.ModuleList(nn.Embedding(cfg.ngram_buckets, d)
                                          for _ in cfg.ngram_sizes)
        self.pos = PositionSignal(cfg.pos_encoding, d, head_dim, cfg.max_len,
                                  project=cfg.from_end and cfg.pos_encoding == "sinusoidal")
        self.local = nn.ModuleList(block() for _ in range(cfg.num_local_layers))
        self.ln_local = nn.LayerNorm(d)
        if cfg.pooling == "project":
            self.pool = nn.Linear(cfg.patch_slots * d, wide)
        else:
            self.slot_embed = nn.Parameter(torch.zeros(cfg.slots, d))
            self.ln_pool = nn.LayerNorm(d)
            self.pool_attn = Attention(d, cfg.nhead, cfg.dropout, cross=True)
            self.pool = nn.Linear(cfg.slots * d, wide)
        self.global_blocks = nn.ModuleList(  # same head size as the byte layers
            Block(wide, cfg.nhead * self.factor, cfg.dim_feedforward * self.factor, cfg.dropout)
            for _ in range(cfg.num_global_layers))
        self.ln_global = nn.LayerNorm(wide)
        if cfg.decoder_memory in ("offsets", "both"):
            self.unpool = nn.Linear(wide, cfg.patch_slots * d)
        self.decoder = Decoder(cfg, self.embed)
        self.register_buffer("seen_bytes", torch.zeros(256, dtype=torch.bool))
        self.apply(init_weights)
        if isinstance(self.embed, Utf8ByteEmbedding):
            self.embed.reset_bits()
        if cfg.ngram_init_std is not None:  # a rarely seen n-gram then adds little noise
            for table in self.ngram_embeds:
                nn.init.normal_(table.weight, std=cfg.ngram_init_std)

    def see_texts(self, texts: Sequence[str]) -> None:
        """Mark the byte values of training rows as seen (training calls this with each
        epoch's rows before stepping on them)."""
        data = bytearray("".join(texts).encode("utf-8", "surrogatepass"))
        if data:
            values = torch.frombuffer(data, dtype=torch.uint8).long().unique()
            self.seen_bytes[values.to(self.seen_bytes.device)] = True

    def unseen_bytes(self, src: Tensor) -> Tensor | None:
        """(B, T) True at bytes never seen in training, or None when there are none (always
        while training: every training row is marked seen first)."""
        if self.training:
            return None
        specials = self.cfg.vocab_size - 256
        unseen = (src >= specials) & ~self.seen_bytes[(src - specials).clamp(min=0)]
        return unseen if bool(unseen.any()) else None

    def embed_bytes(self, batch: dict[str, Tensor]) -> Tensor:
        """Byte vectors plus hashed n-gram vectors. An n-gram holding a byte never seen in
        training backs off to nothing: its bucket holds other n-grams' vectors (noise)."""
        x = self.embed(batch["src"])
        unseen = self.unseen_bytes(batch["src"])
        for i, (n, table) in enumerate(zip(self.cfg.ngram_sizes, self.ngram_embeds)):
            e = table(batch["ngrams"][..., i])
            if unseen is not None:
                e = e.masked_fill(holds_any(unseen, n)[..., None], 0.0)
            x = x + e
        return x

    def pool_project(self, x: Tensor, batch: dict[str, Tensor], n: int) -> Tensor:
        """Each byte into slot (its patch, its in-patch position); a patch's slots,
        concatenated in order, go through one linear map."""
        b, size, d = x.shape
        rows = torch.arange(b, device=x.device)[:, None].expand(b, size)
        slots = x.new_zeros(b, n + 1, self.cfg.patch_slots, d)  # patch n: padding
        slots = slots.index_put((rows, batch["patch"], batch["in_patch"]), x)
        return self.pool(slots[:, :n].flatten(2))

    def pool_cross(self, x: Tensor, batch: dict[str, Tensor], n: int) -> Tensor:
        """q query slots per patch, started from the mean of its bytes, attend only to
        the bytes of their own patch; their outputs, concatenated, are linearly mapped."""
        b, size, d = x.shape
        q = self.cfg.slots
        patch = batch["patch"]
        sums = x.new_zeros(b, n + 1, d).scatter_add(1, patch[..., None].expand(b, size, d), x)
        counts = torch.zeros(b, n + 1, device=x.device).scatter_add(
            1, patch, torch.ones_like(patch, dtype=x.dtype))
        mean = sums[:, :n] / counts[:, :n, None].clamp(min=1)
        queries = (mean[:, :, None, :] + self.slot_embed).reshape(b, n * q, d)
        query_patch = torch.arange(n, device=x.device).repeat_interleave(q)
        mask = query_patch[None, :, None] == patch[:, None, :]  # (B, n*k, T)
        mask = mask | ~mask.any(-1, keepdim=True)  # padding patches: attend anywhere, unused
        out = queries + self.pool_attn(self.ln_pool(queries), x, mask=mask[:, None])
        return self.pool(out.reshape(b, n, q * d))

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
        b, k, d = x.shape[0], self.factor, self.cfg.d_model
        h = add_positions(pooled.view(b, n, k, d), patch_pos[:, None],
                          patch_to_end[..., None], self.pos, end_signal).view(b, n, k * d)
        patch_mask = key_padding_mask(batch["n_patches"], n)
        for block in self.global_blocks:
            h = block(h, mask=patch_mask, rot=self.pos.rotary(patch_pos))
        h = self.ln_global(h)
        if self.cfg.decoder_memory in ("offsets", "bytes"):
            return self.byte_memory(h, x, batch, byte_mask, pos, to_end)
        keys = (patch_to_end if self.cfg.from_end else patch_pos[None].expand(b, n))
        slots_mask = key_padding_mask(batch["n_patches"] * k, n * k)
        memory = Memory(h.view(b, n * k, d), slots_mask,
                        self.pos.rotary(keys.repeat_interleave(k, dim=1)))
        if self.cfg.decoder_memory == "both":
            memory = memory.cat(self.byte_memory(h, x, batch, byte_mask, pos, to_end))
        return memory

    def byte_memory(self, h: Tensor, x: Tensor, batch: dict[str, Tensor], byte_mask: Tensor,
                    pos: Tensor, to_end: Tensor) -> Memory:
        """One memory vector per input byte, keyed by the byte's own position. `offsets`
        and `both`: read out of its patch's global state alone, by a linear map per
        in-patch position (hourglass-style unpooling, so the decoder sees only patch
        states). `bytes` (ablation): the local encoder's byte state plus its patch's."""
        b, size, d = x.shape
        n = h.shape[1]
        patch = batch["patch"].clamp(max=n - 1)  # padding bytes: any patch (masked)
        if self.cfg.decoder_memory != "bytes":
            slots = self.unpool(h).view(b, n, self.cfg.patch_slots, d)
            rows = torch.arange(b, device=x.device)[:, None].expand(b, size)
            states = slots[rows, patch, batch["in_patch"]]
        else:
            per_patch = h.view(b, n, self.factor, d).sum(2)
            states = x + per_patch.gather(1, patch[..., None].expand_as(x))
        keys = per_row(to_end if self.cfg.from_end else pos, b)
        return Memory(states, byte_mask, self.pos.rotary(keys))


def build_model(cfg: ModelConfig) -> EncoderDecoder:
    """The model a (resolved) config describes: a BLT for a BLTConfig, else the baseline."""
    return BLT(cfg) if isinstance(cfg, BLTConfig) else CharTransformer(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
