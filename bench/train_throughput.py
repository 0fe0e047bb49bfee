"""Training throughput on broad rows: both models, each configuration trained for a few
epochs by `bltlab train` in a process of its own (so its peak RSS is its own).

Per configuration: samples/s and real positions/s (input + output tokens, no padding)
over the last epoch, training FLOPs/s on real positions (bltlab.flops), MFU against this
machine's fp32 matrix-product peak measured here with the same threads, peak RSS, and
the validation exact match and loss it reached. `--against SRC` runs the first
configuration with another checkout's src/ folder as well (e.g. the code before a change,
which may not know the other configurations' flags), taking turns, in the same run.

    python bench/train_throughput.py --json [--threads 1] [--rows 3000] [--epochs 2]
        [--config rows: "batch_size=64" --config tokens: "max_tokens=8192"] [--against SRC]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
CONFIGS = {"rows": [], "tokens": ["--max_tokens", "8192"]}


def matmul_peak(threads: int, dtype: torch.dtype = torch.float32, size: int = 1024,
                repeats: int = 20) -> float:
    """Matrix-product FLOP/s of this machine with `threads` threads in `dtype` (bf16 pays
    only where the CPU has bf16 instructions: AVX-512 BF16 or AMX)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def positions(csv_path: Path, mode: str) -> int:
    """Input plus output tokens of a CSV's training rows (95%: the validation split is
    5% of it), in the model's units: characters (+ a start token) or bytes."""
    import csv

    with open(csv_path, encoding="utf-8", newline="") as f:
        rows = [r["input"] for r in csv.DictReader(f)]
    if mode == "blt":
        per_row = [2 * len(x.encode()) + 1 for x in rows]
    else:
        per_row = [2 * len(x) + 2 for x in rows]  # start token and EOS
    return round(sum(per_row) * 0.95)


def train_once(src: Path, mode: str, flags: list[str], csv_path: Path, args) -> dict:
    """One `bltlab train` in its own process: its last epoch's figures and peak RSS."""
    with tempfile.TemporaryDirectory() as save_dir:
        cmd = [sys.executable, "-m", "bltlab.cli", "--threads", str(args.threads), "train",
               "--mode", mode, "--train_csv", str(csv_path), "--fresh_pairs", "false",
               "--epochs", str(args.epochs), "--save_dir", save_dir, "--no_progress",
               "--tensorboard", "false", *flags]
        env = {**os.environ, "PYTHONPATH": str(src)}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        err = proc.stderr.read()
        if status:
            raise SystemExit(f"{' '.join(cmd)} failed: {err[-500:]}")
        history = json.loads((Path(save_dir) / f"history_{mode}.json").read_text())
    last = history["epochs"][-1]
    return {"samples_per_s": last["samples_per_s"], "epoch_seconds": last["epoch_seconds"],
            "train_flops_per_epoch": last["train_flops"] / last["epoch"],
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "val_exact_match":
            last["val_exact_match"], "val_loss": round(last["val_loss"], 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print only the JSON")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=3000, help="broad rows generated to train on")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run (the last is timed)")
    p.add_argument("--modes", nargs="+", default=["char", "blt"])
    p.add_argument("--config", nargs=2, action="append", metavar=("NAME", "FLAGS"),
                   help='a named configuration: extra `bltlab train` flags, e.g. tokens '
                        '"--max_tokens 8192" (default: rows, and tokens at 8192)')
    p.add_argument("--against", type=Path, default=None,
                   help="another checkout's src/ folder, run with the first configuration")
    args = p.parse_args()
    configs = {name: flags.split() for name, flags in args.config} if args.config else CONFIGS
    sources = {"this": SRC, **({"against": args.against} if args.against else {})}
    peak = matmul_peak(args.threads)
    bf16_peak = matmul_peak(args.threads, torch.bfloat16, size=512, repeats=3)
    with tempfile.TemporaryDirectory() as data:
        subprocess.run([sys.executable, "-m", "bltlab.cli", "data", "generate", "--out", data,
                        "--train", str(args.rows), "--test", "1", "--seed", "7"],
                       env={**os.environ, "PYTHONPATH": str(SRC)}, check=True,
                       capture_output=True)
        csv_path = Path(data) / "train.csv"
        result = {"threads": args.threads, "rows": args.rows, "epochs": args.epochs,
                  "fp32_matmul_peak_gflops": round(peak / 1e9, 1),
                  "bf16_matmul_peak_gflops": round(bf16_peak / 1e9, 1), "runs": {}}
        for mode in args.modes:
            real = positions(csv_path, mode)
            for i, (name, flags) in enumerate(configs.items()):
                for source, src in sources.items():  # taking turns: drift hits both
                    if source == "against" and i:
                        continue
                    run = train_once(src, mode, flags, csv_path, args)
                    flops_per_s = run["train_flops_per_epoch"] / run["epoch_seconds"]
                    run.update(positions_per_s=round(real / run["epoch_seconds"]),
                               train_gflops=round(flops_per_s / 1e9, 1),
                               mfu=round(flops_per_s / peak, 3))
                    result["runs"][f"{mode} {name} ({source})"] = run
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
