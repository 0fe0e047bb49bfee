"""FLOPs on real positions only: forward, training and cached greedy decoding, per row.

Every matrix product in both models costs a fixed polynomial of a row's lengths: L
input tokens (characters or bytes), T decoder positions (target tokens + 1), n patches
(BLT), with the terms 1, L, T, n, L², T², n², LT, Tn, Ln. `FlopModel.fit(model)`
measures a handful of single-row passes (batch of one: no padding) with torch's
`FlopCounterMode` (attention on the math backend, whose products it sees; a causal
self-attention is counted as the full square it computes) and solves for the
coefficients, checking them exactly on shapes it did not fit on. A row's cost is then
the polynomial of its own lengths: it does not depend on batch size, padding or row
order. Three costs, each split by part of the model:

- `forward`: one teacher-forced forward pass;
- `train`: forward + backward of one training step (counted, not assumed 3x forward);
- `infer`: cached greedy decoding: the encoder once, then one decoder step per output
  token (U = output tokens incl. EOS plays T's part).

The parts are the model's top-level modules (bltlab.models): work outside them would be
`other`, which the tests require to be none. A fitted polynomial is kept on disk
(`$BLTLAB_CACHE`, default ~/.cache/bltlab), keyed by the model's configuration, the
source of the modules that define its FLOPs and torch's version.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bltlab.config import ModelConfig
from bltlab.errors import BltlabError
from bltlab.fileio import write_json
from bltlab.layers import fixed_weights
from bltlab.models import BLT, EncoderDecoder, build_model
from bltlab.runtime import torch_threads
from bltlab.vocab import BOS, PAD

KINDS = ("forward", "train", "infer")
# (L, T, n) of the rows measured: small (cached decoding runs T steps), varied enough to
# pin the 10 coefficients; n is raised where the pooling's slots need more patches
FIT_SHAPES = [(3, 2, 1), (5, 4, 2), (8, 3, 3), (4, 7, 2), (11, 6, 4), (6, 9, 3), (9, 5, 2),
              (13, 8, 5), (7, 12, 3), (10, 11, 6), (12, 3, 4), (2, 6, 1)]
CHECK_SHAPES = [(14, 13, 5), (9, 10, 4)]


def terms(L, T, n) -> np.ndarray:
    """The polynomial's terms for lengths (scalars or arrays): (..., 10), float64."""
    L, T, n = (np.asarray(v, dtype=np.float64) for v in (L, T, n))
    one = np.ones_like(L + T + n)
    return np.stack([one, L * one, T * one, n * one, L * L, T * T, n * n, L * T, T * n,
                     L * n], axis=-1)


def synthetic_batch(model: EncoderDecoder, L: int, T: int, n: int) -> dict[str, torch.Tensor]:
    """One row of L input tokens (n patches for a BLT) and T decoder positions."""
    g = torch.Generator().manual_seed(L * 1000 + T)
    batch = {"src": torch.randint(4, model.vocab_size, (1, L), generator=g),
             "src_lens": torch.tensor([L]),
             "tgt_in": torch.randint(4, model.vocab_size, (1, T), generator=g)}
    batch["tgt_in"][0, 0] = BOS
    batch["tgt_out"] = torch.cat([batch["tgt_in"][:, 1:], torch.tensor([[PAD + 2]])], 1)
    if isinstance(model, BLT):
        n = min(n, L)
        patch = torch.arange(L) * n // L  # n contiguous patches, as even as they come
        start = torch.searchsorted(patch, torch.arange(n))
        last = torch.searchsorted(patch, torch.arange(n), right=True) - 1
        batch.update(patch=patch[None], in_patch=(torch.arange(L) - start[patch])[None],
                     n_patches=torch.tensor([n]), patch_to_end=(L - 1 - last)[None],
                     ngrams=torch.zeros(1, L, len(model.cfg.ngram_sizes), dtype=torch.long))
    return batch


def patch_count(model: EncoderDecoder, L: int, n: int) -> int:
    """The patch count a synthetic row can have: enough patches for the pooling slots."""
    if not isinstance(model, BLT):
        return 0
    slots = model.cfg.patch_slots or L
    return min(L, max(n, -(-L // slots)))


class CachedGreedy(nn.Module):
    """Cached greedy decoding's matrix work for one row: the encoder once, then one
    decoder step per output token (the steps `decoding.greedy_decode` takes)."""

    def __init__(self, model: EncoderDecoder):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> None:
        memory, cache = self.model.encode(batch), self.model.new_cache()
        for t in range(batch["tgt_in"].shape[1]):
            self.model.decode(batch["tgt_in"][:, t:t + 1], memory, cache, start=t)


def parts(model: EncoderDecoder) -> list[str]:
    """The model's parts, in order: its top-level modules."""
    return [name for name, _ in model.named_children()]


def by_part(model: EncoderDecoder, counter: FlopCounterMode, root: str) -> dict[str, int]:
    """FLOPs a counter saw, per part of the model (its module `root`.<part>), and in all;
    work outside the parts would be `other`."""
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    out = {part: counts.get(f"{root}.{part}", 0) for part in parts(model)}
    other = counter.get_total_flops() - sum(out.values())
    if other:
        out["other"] = other
    out["total"] = counter.get_total_flops()
    return out


def measure(model: EncoderDecoder, kind: str, L: int, T: int, n: int) -> dict[str, int]:
    """FLOPs of one row of these lengths: a forward pass, a training step, or cached
    greedy decoding of T output tokens."""
    batch = synthetic_batch(model, L, T, n)
    root = type(model).__name__
    # byte vectors built from parts (utf8) are built once per model while decoding, not
    # per row: uncounted
    with fixed_weights(model), FlopCounterMode(display=False) as counter, \
            sdpa_kernel(SDPBackend.MATH):
        if kind == "forward":
            with torch.no_grad():
                model(batch)
        elif kind == "train":
            torch.nn.functional.cross_entropy(model(batch).flatten(0, 1),
                                              batch["tgt_out"].flatten()).backward()
        else:
            root = "CachedGreedy.model"
            with torch.no_grad():
                CachedGreedy(model)(batch)
    model.zero_grad(set_to_none=True)
    return by_part(model, counter, root)


@dataclass
class FlopModel:
    """Coefficients of the FLOP polynomial, per kind of cost and part of the model."""

    parts: list[str]
    coef: dict[str, dict[str, list[float]]]  # kind -> part -> 10 coefficients

    @classmethod
    def fit(cls, cfg: ModelConfig) -> FlopModel:
        """The FLOP polynomial of a model configuration (it depends on the architecture
        only; kept in memory and on disk; the global random state is left as it was)."""
        return _fit(cfg)

    def cost(self, kind: str, L, T, n) -> dict[str, np.ndarray]:
        """FLOPs of rows with these lengths (scalars or arrays), per part and total."""
        x = terms(L, T, n)
        return {part: x @ np.asarray(c) for part, c in self.coef[kind].items()}

    def per_row(self, kind: str, L, T, n) -> dict[str, float]:
        """The mean over rows, per part, rounded to whole FLOPs."""
        return {part: float(round(float(np.mean(v))))
                for part, v in self.cost(kind, L, T, n).items()}

    def to_dict(self) -> dict:
        return asdict(self)


def cache_path(cfg: ModelConfig) -> Path:
    """Where the polynomial of `cfg` is kept: named by the configuration, the source of the
    modules its FLOPs come from, and torch's version."""
    here = Path(__file__).parent
    key = hashlib.sha256(json.dumps([type(cfg).__name__, cfg.to_dict(), torch.__version__],
                                    sort_keys=True).encode())
    for name in ("flops.py", "models.py", "layers.py"):
        key.update((here / name).read_bytes())
    root = Path(os.environ.get("BLTLAB_CACHE") or Path.home() / ".cache" / "bltlab")
    return root / "flops" / f"{key.hexdigest()[:24]}.json"


def read_cached(path: Path) -> FlopModel | None:
    """A kept polynomial, or None when there is none (or it is not one)."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        model = FlopModel(d["parts"], d["coef"])
        ok = set(model.coef) == set(KINDS) and all(
            len(c) == len(terms(1, 1, 1)) for kind in model.coef.values() for c in kind.values())
        return model if ok else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@functools.lru_cache(maxsize=32)
def _fit(cfg: ModelConfig) -> FlopModel:
    path = cache_path(cfg)
    cached = read_cached(path)
    if cached is not None:
        return cached
    with torch_threads(1):  # single-row passes: one thread is fastest
        with torch.random.fork_rng(devices=[]):
            model = build_model(cfg).eval()
        coef = {kind: fit_kind(model, kind) for kind in KINDS}
    fitted = FlopModel(list(coef["forward"]), coef)
    with contextlib.suppress(BltlabError):  # an unwritable cache: fit again next time
        write_json(path, fitted.to_dict())
    return fitted


def fit_kind(model: EncoderDecoder, kind: str) -> dict[str, list[float]]:
    """Solve for one kind's coefficients and check them on shapes left out of the fit."""
    shapes = [(L, T, patch_count(model, L, n)) for L, T, n in FIT_SHAPES]
    rows = [measure(model, kind, *s) for s in shapes]
    x = terms(*np.array(shapes).T)
    parts = sorted(set().union(*rows), key=[*rows[0], "other"].index)
    coef = {part: np.linalg.lstsq(x, np.array([r.get(part, 0) for r in rows], dtype=np.float64),
                                  rcond=None)[0] for part in parts}
    for L, T, n in CHECK_SHAPES:
        n = patch_count(model, L, n)
        seen, x1 = measure(model, kind, L, T, n), terms(L, T, n)
        for part in parts:
            value = seen.get(part, 0)
            if abs(float(x1 @ coef[part]) - value) > 1e-6 * max(1, value) + 0.5:
                raise RuntimeError(f"{kind} FLOPs of {part} are not a polynomial of the "
                                   f"row's lengths ({value} seen, {float(x1 @ coef[part])})")
    return {part: [float(round(c, 6)) for c in v] for part, v in coef.items()}


def batch_lengths(batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, ...]:
    """L, T and n of each row of a collated training batch (padding left out)."""
    L = batch["src_lens"].numpy()
    T = (batch["tgt_out"] != PAD).sum(1).numpy()
    n = batch["n_patches"].numpy() if "n_patches" in batch else np.zeros_like(L)
    return L, T, n
