"""Where the memory goes: the peak resident memory of each stage of `make quick`, each run
as the command it is in a process of its own, and a training run's resident memory epoch
after epoch with and without giving freed memory back to the system.

Stages (broad profile, the recipes, `--epochs` each): data generation, the robustness
sets, training each model, evaluating each on the broad test set and on every
robustness set (`bltlab run --skip_train`, which also writes the report).

    python bench/memory.py --json [--threads 1] [--epochs 1] [--growth_epochs 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def peak_mb(args: list[str], cwd: str) -> dict:
    """Run a command; its wall-clock seconds and peak resident memory (MB)."""
    import time

    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read()
    if status:
        raise SystemExit(f"{' '.join(args)} failed: {err[-500:]}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024),
            "seconds": round(time.perf_counter() - start, 1)}


def stages(threads: int, epochs: int) -> dict:
    cli = [sys.executable, "-m", "bltlab.cli", "--threads", str(threads)]
    out = {}
    with tempfile.TemporaryDirectory() as work:
        out["data generate"] = peak_mb([*cli, "data", "generate"], work)
        out["data robustness"] = peak_mb([*cli, "data", "robustness"], work)
        for mode in ("char", "blt"):
            out[f"train {mode}"] = peak_mb([*cli, "train", "--mode", mode, "--epochs",
                                            str(epochs), "--no_progress"], work)
        out["evaluate both, robustness sets, report"] = peak_mb(
            [*cli, "run", "--quick", "--skip_train", "--no_progress"], work)
    return out


def growth(epochs: int) -> dict:
    """Resident memory after each epoch of a broad BLT (width 32, 3,000 rows), as trained,
    and with freed memory left to the allocator (release_memory a no-op)."""
    code = f"""
import json, os, sys, tempfile, torch
import bltlab.training as training
from bltlab.data import generate
from bltlab.spec import build_spec
torch.set_num_threads(1)
if sys.argv[1] == "kept":
    training.release_memory = lambda: None
work = tempfile.mkdtemp()
train_csv, _ = generate(work, n_train=3000, n_test=1, profile="broad")
spec = build_spec("blt", settings={{"train_csv": str(train_csv), "epochs": {epochs},
    "save_dir": work + "/ck", "progress_bars": False, "tensorboard": False,
    "d_model": 32, "dim_feedforward": 128}})
seen = []
page = os.sysconf("SC_PAGE_SIZE") / 2**20
def rss(row):
    seen.append(round(int(open("/proc/self/statm").read().split()[1]) * page))
training.train(spec, rss)
print(json.dumps(seen))
"""
    out = {}
    for variant in ("given back", "kept"):
        done = subprocess.run([sys.executable, "-c", code, variant], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
        if done.returncode:
            raise SystemExit(done.stderr[-500:])
        out[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print only the JSON")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1, help="epochs of each training stage")
    p.add_argument("--growth_epochs", type=int, default=6)
    args = p.parse_args()
    result = {"threads": args.threads, "epochs": args.epochs,
              "stages": stages(args.threads, args.epochs),
              "rss_mb_after_each_epoch": growth(args.growth_epochs)}
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
