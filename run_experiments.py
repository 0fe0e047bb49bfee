"""Seed-compatible wrapper: `python run_experiments.py --quick|--full` is `bltlab run ...`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from bltlab.cli import script  # noqa: E402

if __name__ == "__main__":
    script("run")
