"""Patching and n-gram hashing speed (MB/s of UTF-8 input) for every patcher.

Input: ../shared/data/test.csv repeated 10 times (about 1.4 MB), or generated rows of
that size when the file is absent. Patchers and hashing are timed on the bytes (the
rows already UTF-8 encoded into one array, done once per dataset and timed apart as
"utf8_encoding"); each figure is the best of --repeats runs. The entropy-model
patcher is fitted on the matching train.csv (or generated rows) beforehand; fitting
and calibration are timed separately.

    python bench/patching.py --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bltlab.data import generate, load_pairs
from bltlab.patching import ByteBatch, PatcherConfig, build_patcher, ngram_ids

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print only the JSON")
    p.add_argument("--copies", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()

    if (SHARED / "test.csv").is_file():
        train_csv, test_csv = SHARED / "train.csv", SHARED / "test.csv"
    else:
        train_csv, test_csv = generate(tempfile.mkdtemp(), seed=0)
    texts = load_pairs(test_csv).inputs * args.copies
    train = load_pairs(train_csv).inputs
    megabytes = sum(len(t.encode()) for t in texts) / 1e6

    result: dict = {"input": {"file": str(test_csv), "copies": args.copies, "mb": megabytes}}
    configs = {
        "window-entropy": PatcherConfig("window-entropy", threshold=2.0, max_patch_len=15),
        "entropy-model": PatcherConfig("entropy-model", max_patch_len=0, target_bpp=4.0),
        "space": PatcherConfig("space", max_patch_len=8),
        "static": PatcherConfig("static", static_size=4, max_patch_len=8),
    }
    batch = ByteBatch.from_texts(texts)
    seconds = best_time(lambda: ByteBatch.from_texts(texts), args.repeats)
    result["utf8_encoding"] = {"mb_per_s": round(megabytes / seconds, 2)}
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        patcher = build_patcher(cfg, train)
        setup = time.perf_counter() - t0
        seconds = best_time(lambda p=patcher: p.segment(batch), args.repeats)
        result[name] = {"mb_per_s": round(megabytes / seconds, 2),
                        "bytes_per_patch": round(patcher.segment(texts).bytes_per_patch(), 3),
                        "config": patcher.cfg.describe()}
        if name == "entropy-model":
            result[name]["fit_and_calibrate_s"] = round(setup, 2)
    seconds = best_time(lambda: ngram_ids(batch, (1, 2, 3), 4096), args.repeats)
    result["hashing"] = {"mb_per_s": round(megabytes / seconds, 2), "ns": [1, 2, 3],
                         "buckets": 4096}
    print(json.dumps(result, indent=None if args.json else 2, ensure_ascii=False))


if __name__ == "__main__":
    main()
