"""Models: the character-level encoder-decoder baseline and the BLT, built from shared parts.

Both are an `EncoderDecoder`: `encode(batch) -> Memory`, `decode(tokens, memory, cache,
start) -> logits`, `new_cache()`, `max_len` and `vocab_size` are all that training and
decoding use. A model's top-level parts (its children, in order) are what FLOPs are
split by (bltlab.flops):

- baseline: `embeddings` -> `encoder` -> `decoder` -> `head`;
- BLT (the paper's names): `embeddings` (bytes + hashed n-grams) -> `local_encoder` ->
  `pooling` (bytes to patches) -> `global_transformer` (over patches) -> `local_decoder`
  -> `head`.
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


def holds_any(flags: Tensor, n: int) -> Tensor:
    """(B, T) -> (B, T): True where any of the n positions ending there is flagged."""
    out = flags.clone()
    for k in range(1, min(n, flags.shape[1])):
        out[:, k:] |= flags[:, :-k]
    return out


class Embeddings(nn.Module):
    """An input's vectors: its tokens' (the table shared with the decoder and the output
    layer), plus for bytes one hashed n-gram vector per n ending at each byte (the
    paper's hash embeddings), plus the input's position signal."""

    def __init__(self, cfg: ModelConfig, tokens: nn.Module, ngram_sizes: Sequence[int] = (),
                 ngram_buckets: int = 0):
        super().__init__()
        self.tokens = tokens
        self.ngram_sizes = tuple(ngram_sizes)
        self.ngrams = nn.ModuleList(nn.Embedding(ngram_buckets, cfg.d_model)
                                    for _ in self.ngram_sizes)
        self.pos = PositionSignal(cfg.pos_encoding, cfg.d_model, cfg.head_dim, cfg.max_len,
                                  project=cfg.from_end and cfg.pos_encoding == "sinusoidal")

    def forward(self, src: Tensor, src_lens: Tensor, end_signal: PositionSignal | None,
                ngrams: Tensor | None = None, unseen: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """(vectors, positions, distances to the end). An n-gram holding a byte flagged
        `unseen` (never seen in training) backs off to nothing: its bucket holds other
        n-grams' vectors (noise)."""
        pos, to_end = positions(src_lens, src.shape[1])
        x = self.tokens(src)
        for i, (n, table) in enumerate(zip(self.ngram_sizes, self.ngrams)):
            e = table(ngrams[..., i])
            if unseen is not None:
                e = e.masked_fill(holds_any(unseen, n)[..., None], 0.0)
            x = x + e
        return add_positions(x, pos, to_end, self.pos, end_signal), pos, to_end


class Stack(nn.Module):
    """Pre-norm Transformer blocks (self-attention only) and a final norm."""

    def __init__(self, width: int, nhead: int, dim_feedforward: int, dropout: float,
                 layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, nhead, dim_feedforward, dropout)
                                    for _ in range(layers))
        self.ln = nn.LayerNorm(width)

    def forward(self, x: Tensor, mask: Tensor | None = None, rot: Rotary | None = None
                ) -> Tensor:
        for block in self.blocks:
            x = block(x, mask=mask, rot=rot)
        return self.ln(x)


class Decoder(nn.Module):
    """Autoregressive decoder: output tokens (the shared table) and positions, blocks with
    causal self-attention and cross-attention to the memory, a final norm. With
    `relative_values` (RoPE) cross-attention also returns how far a step is past each
    key's position (layers.Attention)."""

    def __init__(self, cfg: ModelConfig, embed: nn.Module, relative_values: bool = False):
        super().__init__()
        self.embed = embed
        self.pos = PositionSignal(cfg.pos_encoding, cfg.d_model, cfg.head_dim, cfg.max_len)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout, cross=True,
                  relative_values=relative_values)
            for _ in range(cfg.num_decoder_layers))
        self.ln = nn.LayerNorm(cfg.d_model)

    def forward(self, tokens: Tensor, states: Tensor, mask: Tensor | None = None,
                rot_mem: Rotary | None = None, cache: KVCache | None = None,
                start: int = 0) -> Tensor:
        """States for `tokens` at positions start.., cross-attending to a `Memory` given
        as its parts (so that what follows tensors through modules, FLOPs by part, sees
        the memory enter); with `cache` (one dict per block, filled as it goes) only the
        new tokens are fed, one step at a time."""
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.embed(tokens)
        e = self.pos.embed(pos)
        if e is not None:
            x = x + e
        rot = self.pos.rotary(pos)
        for i, block in enumerate(self.blocks):
            x = block(x, is_causal=tokens.shape[1] > 1, rot=rot, memory=states,
                      memory_mask=mask, rot_mem=rot_mem,
                      cache=cache[i] if cache is not None else None)
        return self.ln(x)


class TiedHead(nn.Module):
    """The output layer: each state's scores over the vocabulary, through the token table
    (tied weights: no parameters of its own)."""

    def forward(self, x: Tensor, table: nn.Module) -> Tensor:
        return F.linear(x, table.weight)


class EncoderDecoder(nn.Module):
    """What both models share: `embeddings` (whose token table the decoder and the head
    share), a `Decoder` over `encode(batch)`'s memory, and the tied `head`."""

    cfg: ModelConfig
    embeddings: Embeddings
    decoder: Decoder
    head: TiedHead

    def encode(self, batch: dict[str, Tensor]) -> Memory:
        raise NotImplementedError

    def decode(self, tokens: Tensor, memory: Memory, cache: KVCache | None = None,
               start: int = 0) -> Tensor:
        """Logits for `tokens` at positions start.. (with `cache`: only the new tokens)."""
        states = self.decoder(tokens, memory.states, memory.mask, memory.rot, cache, start)
        return self.head(states, self.embeddings.tokens)

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
        self.embeddings = Embeddings(cfg, nn.Embedding(cfg.vocab_size, cfg.d_model))
        self.encoder = Stack(cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout,
                             cfg.num_encoder_layers)
        self.decoder = Decoder(cfg, self.embeddings.tokens)
        self.head = TiedHead()
        self.apply(init_weights)

    def encode(self, batch: dict[str, Tensor]) -> Memory:
        src, src_lens = batch["src"], batch["src_lens"]
        size = src.shape[1]
        x, pos, to_end = self.embeddings(src, src_lens,
                                         self.decoder.pos if self.cfg.from_end else None)
        mask = key_padding_mask(src_lens, size) if bool((src_lens < size).any()) else None
        x = self.encoder(x, mask, self.embeddings.pos.rotary(pos))
        keys = per_row(to_end if self.cfg.from_end else pos, len(src))
        return Memory(x, mask, self.embeddings.pos.rotary(keys))


class ProjectPooling(nn.Module):
    """Bytes to patches by in-patch position: each byte's state goes into slot (its patch,
    its position in it); a patch's slots, concatenated in order, go through one linear
    map to the global width, so the order of a patch's bytes is kept."""

    def __init__(self, cfg: BLTConfig):
        super().__init__()
        self.slots = cfg.patch_slots
        self.proj = nn.Linear(cfg.patch_slots * cfg.d_model, cfg.global_factor * cfg.d_model)

    def forward(self, x: Tensor, batch: dict[str, Tensor], n: int) -> Tensor:
        b, size, d = x.shape
        rows = torch.arange(b, device=x.device)[:, None].expand(b, size)
        slots = x.new_zeros(b, n + 1, self.slots, d)  # patch n: padding
        slots = slots.index_put((rows, batch["patch"], batch["in_patch"]), x)
        return self.proj(slots[:, :n].flatten(2))


class CrossPooling(nn.Module):
    """The paper's pooling: q query slots per patch, started from the mean of its bytes,
    cross-attend only to the bytes of their own patch; their outputs, concatenated, are
    mapped to the global width."""

    def __init__(self, cfg: BLTConfig):
        super().__init__()
        self.slot_embed = nn.Parameter(torch.zeros(cfg.slots, cfg.d_model))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.nhead, cfg.dropout, cross=True)
        self.proj = nn.Linear(cfg.slots * cfg.d_model, cfg.global_factor * cfg.d_model)

    def forward(self, x: Tensor, batch: dict[str, Tensor], n: int) -> Tensor:
        b, size, d = x.shape
        q = self.slot_embed.shape[0]
        patch = batch["patch"]
        sums = x.new_zeros(b, n + 1, d).scatter_add(1, patch[..., None].expand(b, size, d), x)
        counts = torch.zeros(b, n + 1, device=x.device).scatter_add(
            1, patch, torch.ones_like(patch, dtype=x.dtype))
        mean = sums[:, :n] / counts[:, :n, None].clamp(min=1)
        queries = (mean[:, :, None, :] + self.slot_embed).reshape(b, n * q, d)
        query_patch = torch.arange(n, device=x.device).repeat_interleave(q)
        mask = query_patch[None, :, None] == patch[:, None, :]  # (B, n*q, T)
        mask = mask | ~mask.any(-1, keepdim=True)  # padding patches: attend anywhere, unused
        out = queries + self.attn(self.ln(queries), x, mask=mask[:, None])
        return self.proj(out.reshape(b, n, q * d))


class GlobalTransformer(Stack):
    """The latent global transformer over patches, k times as wide as the byte layers
    (k = `global_factor`, heads of the same size): each patch vector is k vectors of the
    byte width, each given the patch's position signals."""

    def __init__(self, cfg: BLTConfig):
        k = cfg.global_factor
        super().__init__(k * cfg.d_model, cfg.nhead * k, cfg.dim_feedforward * k, cfg.dropout,
                         cfg.num_global_layers)
        self.factor = k

    def forward(self, patches: Tensor, batch: dict[str, Tensor],  # type: ignore[override]
                signal: PositionSignal, end_signal: PositionSignal | None) -> Tensor:
        b, n, wide = patches.shape
        patch_pos = torch.arange(n, device=patches.device)
        h = add_positions(patches.view(b, n, self.factor, wide // self.factor),
                          patch_pos[:, None], batch["patch_to_end"][..., None], signal,
                          end_signal).view(b, n, wide)
        return super().forward(h, key_padding_mask(batch["n_patches"], n),
                               signal.rotary(patch_pos))


class BLT(EncoderDecoder):
    """Byte Latent Transformer encoder-decoder.

    Bytes (+ hashed n-gram vectors; at evaluation an n-gram holding a byte never seen in
    training adds nothing) -> local encoder over bytes -> pooling into one vector per
    patch that keeps the order of its bytes -> global transformer over patches -> local
    decoder writing bytes, cross-attending to the patch states. Patches come as index
    tensors (each byte's patch and in-patch position); nothing loops over rows or
    patches. Cross-attention keys carry, with RoPE and `from_end`, each patch's distance
    from its last byte to the end of the input.

    As in the paper, the global transformer is wider than the byte layers: at width
    k·d_model each patch state is k vectors of the byte width, and the decoder
    cross-attends to all n·k of them, so a patch passes k times more to the decoder
    while the global model still runs over n patches. (`decoder_memory bytes`, an
    ablation and not a BLT, gives the decoder the byte states instead.)
    """

    def __init__(self, cfg: BLTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        bytes_ = (nn.Embedding(cfg.vocab_size, d) if cfg.byte_embedding == "table"
                  else Utf8ByteEmbedding(cfg.vocab_size - 256, d))
        self.embeddings = Embeddings(cfg, bytes_, cfg.ngram_sizes, cfg.ngram_buckets)
        self.local_encoder = Stack(d, cfg.nhead, cfg.dim_feedforward, cfg.dropout,
                                   cfg.num_local_layers)
        self.pooling = (ProjectPooling if cfg.pooling == "project" else CrossPooling)(cfg)
        self.global_transformer = GlobalTransformer(cfg)
        self.local_decoder = Decoder(cfg, bytes_, cfg.relative_values
                                     and cfg.pos_encoding == "rope")
        self.head = TiedHead()
        self.register_buffer("seen_bytes", torch.zeros(256, dtype=torch.bool))
        self.apply(init_weights)
        if isinstance(bytes_, Utf8ByteEmbedding):
            bytes_.reset_bits()
        if cfg.ngram_init_std is not None:  # a rarely seen n-gram then adds little noise
            for table in self.embeddings.ngrams:
                nn.init.normal_(table.weight, std=cfg.ngram_init_std)

    @property
    def decoder(self) -> Decoder:
        """The local decoder, by the name both models share."""
        return self.local_decoder

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

    def encode(self, batch: dict[str, Tensor]) -> Memory:
        end_signal = self.local_decoder.pos if self.cfg.from_end else None
        signal = self.embeddings.pos
        x, pos, to_end = self.embeddings(batch["src"], batch["src_lens"], end_signal,
                                         batch["ngrams"], self.unseen_bytes(batch["src"]))
        byte_mask = key_padding_mask(batch["src_lens"], x.shape[1])
        x = self.local_encoder(x, byte_mask, signal.rotary(pos))
        n = int(batch["n_patches"].max())
        h = self.global_transformer(self.pooling(x, batch, n), batch, signal, end_signal)
        if self.cfg.decoder_memory == "bytes":
            return self.byte_memory(h, x, batch, byte_mask, pos, to_end)
        return self.patch_memory(h, batch)

    def patch_memory(self, h: Tensor, batch: dict[str, Tensor]) -> Memory:
        """Each patch's k vectors, keyed by the patch's end (its distance to the end of
        the input with `from_end`, else its position)."""
        b, n, _ = h.shape
        k, d = self.global_transformer.factor, self.cfg.d_model
        keys = (batch["patch_to_end"] if self.cfg.from_end
                else torch.arange(n, device=h.device)[None].expand(b, n))
        return Memory(h.view(b, n * k, d), key_padding_mask(batch["n_patches"] * k, n * k),
                      self.embeddings.pos.rotary(keys.repeat_interleave(k, dim=1)))

    def byte_memory(self, h: Tensor, x: Tensor, batch: dict[str, Tensor], byte_mask: Tensor,
                    pos: Tensor, to_end: Tensor) -> Memory:
        """The `bytes` ablation: one memory vector per input byte, the local encoder's
        byte state plus its patch's state, keyed by the byte's own position."""
        b, size, d = x.shape
        n = h.shape[1]
        patch = batch["patch"].clamp(max=n - 1)  # padding bytes: any patch (masked)
        per_patch = h.view(b, n, self.global_transformer.factor, d).sum(2)
        states = x + per_patch.gather(1, patch[..., None].expand_as(x))
        keys = per_row(to_end if self.cfg.from_end else pos, b)
        return Memory(states, byte_mask, self.embeddings.pos.rotary(keys))


def build_model(cfg: ModelConfig) -> EncoderDecoder:
    """The model a (resolved) config describes: a BLT for a BLTConfig, else the baseline."""
    return BLT(cfg) if isinstance(cfg, BLTConfig) else CharTransformer(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
