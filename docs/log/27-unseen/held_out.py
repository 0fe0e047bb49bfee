"""Log 27's proxies for the unseen script: scripts held out of broad training besides
Cyrillic, and sets of code points whose lead bytes training never writes.

    python docs/log/27-unseen/held_out.py data OUT      # OUT/{arabic,syriac}/train.csv
                                                        # and proxy.csv; OUT/{pua,planes}.csv
    python docs/log/27-unseen/held_out.py train SCRIPT BLTLAB_ARGS...
        # `bltlab BLTLAB_ARGS` with SCRIPT's languages left out of the broad rows drawn

Run from the repository root with src/ on PYTHONPATH. A held-out script's train.csv is
data/broad/train.csv without the rows holding its lead bytes, topped up to 10,000 rows
by rows of the reduced profile (its 5% validation split then holds none either); its
proxy set is made as the unseen-script set is (2-8 words, half English, half of the
script).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bltlab import cli, profiles
from bltlab.data import load_pairs, reverse, write_pairs

HELD = {"arabic": (("ar", 2000), ("fa", 1000), ("ur", 1000)),  # leads 0xD8-0xDB
        "syriac": (("syriac", 500),)}  # made-up words, leads 0xDC-0xDD
LEADS = {"arabic": range(0xD8, 0xDC), "syriac": range(0xDC, 0xDE)}
CODE_POINTS = {"pua": (0xE000, 0xEFFF, 11),  # lead 0xEE: one 3-byte lead never written
               "planes": (0x40000, 0xFFFFD, 12)}  # leads 0xF1-0xF3 (training: 0xF0 only)


def hold_out(script: str) -> None:
    """Leave the script's languages out of the broad rows drawn from now on."""
    for lang, _ in HELD[script]:
        del profiles.OTHER_LANGUAGES[lang]


def write(path: Path, inputs: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pairs(path, inputs, [reverse(x) for x in inputs])


def proxy_row(rng: np.random.Generator, other) -> str:
    words = [other(rng) if rng.random() < 0.5 else profiles.choice(rng, profiles.wordlist())
             for _ in range(int(rng.integers(2, 9)))]
    if all(w.isascii() for w in words):
        words[0] = other(rng)
    return " ".join(words)


def script_word(script: str):
    return lambda rng: profiles.choice(rng, profiles.language_words(
        *profiles.choice(rng, HELD[script])))


def made_up_word(lo: int, hi: int):
    return lambda rng: "".join(chr(int(rng.integers(lo, hi + 1)))
                               for _ in range(int(rng.integers(2, 8))))


def make_data(out: Path) -> None:
    for name, (lo, hi, seed) in CODE_POINTS.items():
        rng = np.random.default_rng(seed)
        write(out / f"{name}.csv", [proxy_row(rng, made_up_word(lo, hi)) for _ in range(300)])
    rows = load_pairs("data/broad/train.csv").inputs
    for script in HELD:
        rng = np.random.default_rng(2027)
        write(out / script / "proxy.csv", [proxy_row(rng, script_word(script))
                                           for _ in range(300)])
        kept = [x for x in rows if not set(LEADS[script]) & set(x.encode())]
        saved = dict(profiles.OTHER_LANGUAGES)
        hold_out(script)
        rng = np.random.default_rng(99)
        kept += [profiles.broad_row(rng) for _ in range(len(rows) - len(kept))]
        profiles.OTHER_LANGUAGES.clear()
        profiles.OTHER_LANGUAGES.update(saved)
        write(out / script / "train.csv", kept)


if __name__ == "__main__":
    if sys.argv[1] == "data":
        make_data(Path(sys.argv[2]))
    else:
        hold_out(sys.argv[2])
        sys.exit(cli.main(sys.argv[3:]))
