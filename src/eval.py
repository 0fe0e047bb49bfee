"""Seed-compatible wrapper: `python src/eval.py ...` is `bltlab eval ...`."""

from bltlab.cli import script

if __name__ == "__main__":
    script("eval")
