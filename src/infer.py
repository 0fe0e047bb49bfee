"""Seed-compatible wrapper: `python src/infer.py ...` is `bltlab infer ...`."""

from bltlab.cli import script

if __name__ == "__main__":
    script("infer")
