"""Seed-compatible wrapper: `python src/train.py ...` is `bltlab train ...`."""

from bltlab.cli import script

if __name__ == "__main__":
    script("train")
