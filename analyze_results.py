"""Seed-compatible wrapper: `python analyze_results.py [--output_dir results] [--no_plots]
[--dpi N]` is `bltlab analyze ...`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from bltlab.cli import script  # noqa: E402

if __name__ == "__main__":
    script("analyze")
