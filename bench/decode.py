"""Decoding speed (rows/s) and exact match: uncached greedy, KV-cached greedy, beam search.

Each model's checkpoint decodes every row of the test set (../shared/data/test.csv when
present, else data/test.csv) three ways: greedy re-running the whole prefix at every
step (the reference), greedy with the key/value cache (what eval and infer use), and
beam search (width 5, length penalty 1.0). Rows are batched by length (256 per batch,
256 / width rows under beam search).

    python bench/decode.py --json [--char CKPT] [--blt CKPT] [--rows N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bltlab.checkpoint import load_model
from bltlab.data import load_pairs
from bltlab.decoding import predict

SEED_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "test.csv"


def measure(model, codec, inputs, targets, **search) -> dict:
    t0 = time.perf_counter()
    preds = predict(model, codec, inputs, **search)
    seconds = time.perf_counter() - t0
    exact = sum(p == t for p, t in zip(preds, targets)) / len(targets)
    return {"rows_per_s": round(len(inputs) / seconds, 1), "seconds": round(seconds, 2),
            "exact_match": round(exact, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--char", default="checkpoints/best_char_model.pt")
    p.add_argument("--blt", default="checkpoints/best_blt_model.pt")
    p.add_argument("--test_csv", default=str(SEED_TEST if SEED_TEST.is_file()
                                             else "data/test.csv"))
    p.add_argument("--rows", type=int, default=0, help="only the first N rows (0: all)")
    p.add_argument("--beam_width", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {"test_csv": args.test_csv, "threads": args.threads}
    for mode in ("char", "blt"):
        model, codec, _ = load_model(getattr(args, mode), mode)
        pairs = load_pairs(args.test_csv, too_long=codec.too_long)
        n = args.rows or len(pairs)
        inputs, targets = pairs.inputs[:n], pairs.targets[:n]
        results[mode] = {
            "rows": n,
            "uncached_greedy": measure(model, codec, inputs, targets, use_cache=False),
            "cached_greedy": measure(model, codec, inputs, targets),
            f"beam{args.beam_width}": measure(model, codec, inputs, targets,
                                              beam_width=args.beam_width),
        }
        r = results[mode]
        r["cache_speedup"] = round(r["cached_greedy"]["rows_per_s"]
                                   / r["uncached_greedy"]["rows_per_s"], 1)
        if not args.json:
            print(mode, json.dumps(r))
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
