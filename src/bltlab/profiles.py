"""What the data generator draws: the seed's row distribution, a broad one, and the
held-out robustness sets.

- `seed`: the seed data's distribution (3-16 lowercase English words, ~1% non-ASCII).
- `broad`: what a person may type. Lengths from 1 to `MAX_CHARS` characters with real
  mass at both ends; lower, sentence, title, upper and mixed case; every printable ASCII
  character (comma, quotes and backslash included), numbers and tabs; words of other
  languages from wordfreq's own word lists (Latin with diacritics, Greek, Arabic,
  Persian, Urdu, Hebrew, Devanagari, Chinese, Japanese, Korean), made-up words of scripts
  wordfreq lacks drawn from their Unicode ranges (`SCRIPT_RANGES`: with these, every
  two-byte UTF-8 lead byte outside Cyrillic's 0xD0-0xD3 is written in training) and
  emoji from Unicode ranges, multi-code-point ones included. Cyrillic is left out on
  purpose (`HELD_OUT`): it is the unseen script the robustness sets test.

Every draw is a pure function of a numpy Generator, so a seed gives the same rows.
"""

from __future__ import annotations

import functools
import string
import unicodedata
import zlib
from collections.abc import Callable

import numpy as np

PUNCTUATION = list(".)?;>@}+/*|\\(^#$%'[=<_:-]!&{")
SYMBOLS = PUNCTUATION + list("0123456789")
MIN_WORDS, MAX_WORDS = 3, 15
SYMBOL_PROB = 0.3
WORDLIST_SIZE = 20000

MAX_CHARS = 320  # broad rows: at most this many characters (twice the seed's longest, +)
MAX_BYTES = 500  # ... and this many UTF-8 bytes (models take 511 by default)
# the robustness sets' languages: fixed, so a change of the training profile leaves them as
# they are (rounds stay comparable)
SET_LANGUAGES = {"de": 2000, "fr": 2000, "es": 2000, "pt": 2000, "pl": 2000, "tr": 2000,
                 "vi": 1000, "el": 2000, "ar": 2000, "he": 2000, "hi": 1000, "zh": 500,
                 "ja": 500, "ko": 500}  # language: how many of its top words
# scripts without a wordfreq list: letters and marks of these Unicode ranges (with the
# two-byte UTF-8 lead bytes they are written with)
SCRIPT_RANGES = {"latin-ext-b": (0x0180, 0x024F),  # 0xC6-0xC9
                 "ipa": (0x0250, 0x02FF),  # IPA and modifier letters, 0xC9-0xCB
                 "greek-coptic": (0x0370, 0x03FF),  # 0xCD-0xCF
                 "armenian": (0x0531, 0x0587),  # 0xD4-0xD6
                 "syriac": (0x0710, 0x074F),  # 0xDC-0xDD
                 "thaana": (0x0780, 0x07B1),  # 0xDE
                 "nko": (0x07C0, 0x07FA)}  # 0xDF
OTHER_LANGUAGES = {**SET_LANGUAGES, "fa": 1000, "ur": 1000,  # Persian, Urdu: 0xDA-0xDB
                   **{name: 500 for name in SCRIPT_RANGES}}
HELD_OUT = {"ru": 2000, "uk": 2000, "bg": 2000}  # Cyrillic: never in broad training rows
ASCII = string.printable[:95] + "\t"  # printable ASCII 32-126, and tab


class Weights:
    """Keys drawn with fixed probabilities: numpy's `Generator.choice(keys, p=...)` (one
    uniform number against the cumulative weights, so the same draws), without the
    checks it repeats on every call (they took half the time of making a broad row)."""

    def __init__(self, table: dict[str, float]):
        self.keys = list(table)
        cdf = (np.array(list(table.values())) / sum(table.values())).cumsum()
        self.cdf = cdf / cdf[-1]

    def draw(self, rng: np.random.Generator) -> str:
        return self.keys[int(self.cdf.searchsorted(rng.random(), side="right"))]


BROAD_KINDS = Weights({"seed": 0.25, "text": 0.40, "short": 0.15, "chars": 0.10, "long": 0.10})
CASES = Weights({"lower": 0.4, "sentence": 0.25, "title": 0.15, "upper": 0.1, "mixed": 0.1})
WRAPS = ('"{}"', "'{}'", "({})", "[{}]", "{{{}}}", "<{}>", "`{}`", "*{}*")
TRAILING = list(",.;:!?") + ["...", "'s", "%"]
SEPARATORS = Weights({" ": 0.86, "\t": 0.03, "  ": 0.03, " - ": 0.03, "/": 0.02, " | ": 0.01,
                      "_": 0.02})
# emoji from Unicode ranges: pictographs, emoticons, people (for skin tones and ZWJ
# families), symbols that take the emoji presentation selector, regional indicators
PICTOGRAPHS = [*range(0x1F300, 0x1F5FF + 1), *range(0x1F600, 0x1F64F + 1),
               *range(0x1F680, 0x1F6C5 + 1), *range(0x1F90C, 0x1F9FF + 1)]
PEOPLE = list(range(0x1F466, 0x1F469 + 1)) + list(range(0x1F46E, 0x1F478 + 1))
SKIN_TONES = range(0x1F3FB, 0x1F3FF + 1)
SYMBOLS_VS16 = list(range(0x2600, 0x26FF + 1)) + list(range(0x2700, 0x27BF + 1))
REGIONAL = range(0x1F1E6, 0x1F1FF + 1)
ZWJ, VS16 = "\u200d", "\ufe0f"


def top_words(lang: str, n: int) -> list[str]:
    """wordfreq's top `n` words of a language. wordfreq keeps each language's whole
    frequency table once read (~350 MB for the broad profile's languages); only the top
    words are used here, so its caches are emptied after each read."""
    import wordfreq

    words = wordfreq.top_n_list(lang, n)
    for cached in (wordfreq.top_n_list, wordfreq.get_frequency_list,
                   wordfreq.get_frequency_dict):
        cached.cache_clear()
    return words


@functools.cache
def wordlist() -> list[str]:
    """The seed generator's words: wordfreq's top 20,000 English words within the BMP."""
    return [w for w in top_words("en", WORDLIST_SIZE) if all(ord(c) < 0x10000 for c in w)]


@functools.cache
def language_words(lang: str, n: int) -> list[str]:
    """wordfreq's top `n` words of a language (shipped with the package: no download), or
    `n` made-up words of a script in SCRIPT_RANGES."""
    if lang in SCRIPT_RANGES:
        return script_words(lang, n)
    return top_words(lang, n)


def script_words(script: str, n: int) -> list[str]:
    """`n` words of 1-8 characters drawn uniformly from the letters and marks of a
    script's Unicode range (a fixed seed per script)."""
    lo, hi = SCRIPT_RANGES[script]
    letters = [chr(c) for c in range(lo, hi + 1) if unicodedata.category(chr(c))[0] in "LM"]
    rng = np.random.default_rng(zlib.crc32(script.encode()))
    return ["".join(choice(rng, letters) for _ in range(int(rng.integers(1, 9))))
            for _ in range(n)]


def choice(rng: np.random.Generator, items: list | tuple | str):
    return items[int(rng.integers(len(items)))]


# ---------------------------------------------------------------- the seed profile


def seed_row(rng: np.random.Generator, words: list[str], rare: list[str],
             non_ascii_rate: float = 0.0) -> str:
    """One row of the seed's distribution: 3-15 words and, in 30% of rows, a symbol."""
    k = int(rng.integers(MIN_WORDS, MAX_WORDS + 1))
    tokens = [words[i] for i in rng.integers(0, len(words), size=k)]
    if non_ascii_rate > 0 and rng.random() < non_ascii_rate:
        tokens[int(rng.integers(k))] = rare[int(rng.integers(len(rare)))]
    if rng.random() < SYMBOL_PROB:
        tokens.insert(int(rng.integers(0, k + 1)), SYMBOLS[int(rng.integers(len(SYMBOLS)))])
    return " ".join(tokens)


def seed_inputs(n: int, rng: np.random.Generator, non_ascii_rate: float = 0.0) -> list[str]:
    """`n` rows of the seed's distribution; with `non_ascii_rate` > 0 that share of rows
    has one word replaced by a word with non-ASCII characters (of the same list)."""
    words = wordlist()
    rare = [w for w in words if not w.isascii()]
    return [seed_row(rng, words, rare, non_ascii_rate) for _ in range(n)]


# ---------------------------------------------------------------- the broad profile


def emoji(rng: np.random.Generator) -> str:
    """One emoji: a pictograph, a person with a skin tone, a ZWJ family, a symbol with
    the emoji presentation selector, or a flag (two regional indicators)."""
    kind = rng.random()
    if kind < 0.5:
        return chr(choice(rng, PICTOGRAPHS))
    if kind < 0.65:
        return chr(choice(rng, PEOPLE)) + chr(choice(rng, SKIN_TONES))
    if kind < 0.8:
        return ZWJ.join(chr(choice(rng, PEOPLE)) for _ in range(int(rng.integers(2, 5))))
    if kind < 0.9:
        return chr(choice(rng, SYMBOLS_VS16)) + VS16
    return chr(choice(rng, REGIONAL)) + chr(choice(rng, REGIONAL))


def number(rng: np.random.Generator) -> str:
    digits = "".join(choice(rng, string.digits) for _ in range(int(rng.integers(1, 8))))
    if rng.random() < 0.2:
        digits += "." + "".join(choice(rng, string.digits) for _ in range(int(rng.integers(1, 4))))
    return ("-" if rng.random() < 0.05 else "") + digits


def word(rng: np.random.Generator, languages: dict[str, int]) -> str:
    """A word: English (most often), another language, a number, an emoji or a symbol."""
    r = rng.random()
    if r < 0.72 or (not languages and r < 0.88):
        return choice(rng, wordlist())
    if r < 0.88:
        lang = choice(rng, list(languages))
        return choice(rng, language_words(lang, languages[lang]))
    if r < 0.93:
        return number(rng)
    if r < 0.96:
        return emoji(rng)
    return choice(rng, string.punctuation)


def cased(rng: np.random.Generator, words: list[str], style: str) -> list[str]:
    if style == "sentence":
        return [words[0][:1].upper() + words[0][1:], *words[1:]] if words else words
    if style == "title":
        return [w[:1].upper() + w[1:] for w in words]
    if style == "upper":
        return [w.upper() for w in words]
    if style == "mixed":
        return [choice(rng, (w.lower(), w.upper(), w.capitalize(), w)) for w in words]
    return words


def decorated(rng: np.random.Generator, w: str) -> str:
    """Sometimes a word gets trailing punctuation or quotes and brackets around it."""
    r = rng.random()
    if r < 0.12:
        return w + choice(rng, TRAILING)
    if r < 0.18:
        return choice(rng, WRAPS).format(w)
    return w


def text(rng: np.random.Generator, n_words: int, languages: dict[str, int]) -> str:
    """Words in one case style, some decorated, joined by (mostly) single spaces."""
    words = cased(rng, [word(rng, languages) for _ in range(n_words)], CASES.draw(rng))
    words = [decorated(rng, w) for w in words]
    out = words[0]
    for w in words[1:]:
        out += SEPARATORS.draw(rng) + w
    if rng.random() < 0.3:
        out += choice(rng, ".!?")
    return out


def random_chars(rng: np.random.Generator, n: int, languages: dict[str, int]) -> str:
    """`n` characters: printable ASCII and tab (80%) or, drawn uniformly, any other
    character rows with these languages can hold (20%), so that each is trained on."""
    others = other_symbols(tuple(sorted(languages.items())))
    out = []
    for _ in range(n):
        out.append(choice(rng, ASCII) if rng.random() < 0.8 else choice(rng, others))
    return "".join(out)


def fit(text_: str, max_chars: int = MAX_CHARS, max_bytes: int = MAX_BYTES) -> str:
    """Cut `text_` to at most `max_chars` characters and `max_bytes` UTF-8 bytes."""
    text_ = text_[:max_chars]
    while len(text_.encode("utf-8")) > max_bytes:
        text_ = text_[:-1]
    return text_ or "a"


def broad_row(rng: np.random.Generator, languages: dict[str, int] = OTHER_LANGUAGES,
              non_ascii_rate: float = 0.0) -> str:
    """One row of the broad profile (see the module docstring)."""
    kind = BROAD_KINDS.draw(rng)
    if kind == "seed":
        words = wordlist()
        return seed_row(rng, words, [])
    if kind == "text":
        return fit(text(rng, int(rng.integers(1, 21)), languages))
    if kind == "long":
        return fit(text(rng, int(rng.integers(20, 70)), languages))
    if kind == "short":
        if rng.random() < 0.5:
            return random_chars(rng, int(rng.integers(1, 11)), languages)
        return fit(text(rng, 1, languages), max_chars=int(rng.integers(1, 11)))
    return fit(random_chars(rng, int(rng.integers(1, MAX_CHARS + 1)), languages))


def broad_inputs(n: int, rng: np.random.Generator, non_ascii_rate: float = 0.0) -> list[str]:
    """`n` rows of the broad profile (`non_ascii_rate` is ignored: broad rows hold
    other scripts by design)."""
    return [broad_row(rng) for _ in range(n)]


@functools.cache
def symbols(languages: tuple[tuple[str, int], ...]) -> frozenset[str]:
    """Every character a broad row with these (language, top words) can hold."""
    chars = set(ASCII) | set("".join(wordlist()))
    for lang, n in languages:
        chars |= set("".join(language_words(lang, n)))
    for group in (PICTOGRAPHS, PEOPLE, SKIN_TONES, SYMBOLS_VS16, REGIONAL):
        chars |= {chr(c) for c in group}
    chars |= {ZWJ, VS16}
    chars |= {c.upper() for c in chars} | {c.title() for c in chars}
    return frozenset(c for piece in chars for c in piece)


@functools.cache
def other_symbols(languages: tuple[tuple[str, int], ...]) -> list[str]:
    """Those characters that are not ASCII, in a fixed order (for uniform draws)."""
    return sorted(symbols(languages) - set(ASCII))


def broad_alphabet() -> frozenset[str]:
    """Every character a broad row can hold (a char model's vocabulary for fresh rows)."""
    return symbols(tuple(sorted(OTHER_LANGUAGES.items())))


@functools.cache
def seed_alphabet() -> frozenset[str]:
    """Every character a seed-profile row can hold."""
    return frozenset("".join(wordlist())) | frozenset(SYMBOLS) | {" "}


PROFILES: dict[str, Callable[..., list[str]]] = {"seed": seed_inputs, "broad": broad_inputs}
ALPHABETS = {"seed": seed_alphabet, "broad": broad_alphabet}


def alphabet(profile: str) -> frozenset[str]:
    """Every character rows of `profile` can hold (a char model's vocabulary for them)."""
    return ALPHABETS[profile]()


def draw(profile: str, n: int, rng: np.random.Generator, non_ascii_rate: float = 0.0
         ) -> list[str]:
    """`n` input strings of a profile."""
    return PROFILES[profile](n, rng, non_ascii_rate)


# ---------------------------------------------------------------- held-out robustness sets

LENGTH_BANDS = ((0, 10), (10, 20), (20, 50), (50, 100), (100, 200), (200, 300))  # characters
BAND_NAMES = tuple(f"{lo}-{hi}" for lo, hi in LENGTH_BANDS) + (f"{LENGTH_BANDS[-1][1]}+",)
PER_BAND = 500  # rows per band of the `bands` set: 99.5% exact allows 2 wrong


def band_name(length: int) -> str:
    """The length band (of evaluation and the `bands` set) of an input of `length` characters."""
    for (lo, hi), name in zip(LENGTH_BANDS, BAND_NAMES):
        if lo <= length < hi:
            return name
    return BAND_NAMES[-1]


def banded_rows(rng: np.random.Generator, per_band: int = PER_BAND) -> list[str]:
    """Broad rows as trained on, `per_band` in every length band (each drawn row is kept
    while its band has room): a 2,000-row test set has ~120 rows of 200-300 characters,
    where one wrong row is already below 99.5%."""
    kept: dict[str, list[str]] = {name: [] for name in BAND_NAMES}
    while any(len(rows) < per_band for rows in kept.values()):
        row = broad_row(rng)
        band = kept[band_name(len(row))]
        if len(band) < per_band:
            band.append(row)
    return [row for name in BAND_NAMES for row in kept[name]]


ROBUSTNESS_SEED = 31337
LONG_CHARS = (MAX_CHARS + 1, 400)  # longer than every broad training row
ENGLISH_ONLY: dict[str, int] = {}


def cut_to(rng: np.random.Generator, length: int, languages: dict[str, int]) -> str:
    """Text of exactly `length` characters (a text row grown, then cut)."""
    out = ""
    while len(out) < length:
        out += (" " if out else "") + text(rng, int(rng.integers(5, 30)), languages)
    return out[:length]


def short_row(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return random_chars(rng, int(rng.integers(1, 11)), SET_LANGUAGES)
    return fit(text(rng, 1, SET_LANGUAGES), max_chars=int(rng.integers(1, 11)))


def real_text_row(rng: np.random.Generator) -> str:
    """A sentence as written: capital first, commas, quotes, a full stop."""
    words = [choice(rng, wordlist()) for _ in range(int(rng.integers(4, 16)))]
    words[0] = words[0].capitalize()
    for i in range(1, len(words) - 1):
        r = rng.random()
        if r < 0.12:
            words[i] += ","
        elif r < 0.17:
            words[i] = f'"{words[i]}"'
        elif r < 0.20:
            words[i] = words[i].capitalize()
    return " ".join(words) + choice(rng, ".!?")


def unseen_script_row(rng: np.random.Generator) -> str:
    """English words with words of the held-out script (Cyrillic) among them."""
    words = [choice(rng, language_words(lang, n)) if rng.random() < 0.5 else choice(rng, wordlist())
             for lang, n in [choice(rng, list(HELD_OUT.items()))
                             for _ in range(int(rng.integers(2, 9)))]]
    if all(w.isascii() for w in words):
        lang, n = choice(rng, list(HELD_OUT.items()))
        words[0] = choice(rng, language_words(lang, n))
    return " ".join(words)


def repeats_row(rng: np.random.Generator) -> str:
    """A run of one character (`aa`, `...`, `😀😀😀`), or the start of a word with its last
    letter held and perhaps marks after it (`nooo`, `hmm!!`)."""
    if rng.random() < 0.5:
        c = random_chars(rng, 1, SET_LANGUAGES)
        while c.isspace():
            c = random_chars(rng, 1, SET_LANGUAGES)
        return c * int(rng.integers(2, 7))
    w = choice(rng, wordlist())[:int(rng.integers(1, 6))]
    return w + w[-1] * int(rng.integers(1, 4)) + choice(rng, ("", "!!", "...", "??"))


def robustness_sets(rows: int = 300, per_length: int = 3, per_band: int = PER_BAND
                    ) -> dict[str, list[str]]:
    """The held-out sets, fixed by ROBUSTNESS_SEED: short (1-10 characters), long (longer
    than every training row), real text (capitals, commas, quotes), the unseen script,
    `lengths` (`per_length` rows of every length from 1 to 400 characters), repeats
    (runs of one character) and `bands` (unseen broad rows, `per_band` per length band)."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(ROBUSTNESS_SEED).spawn(7)]
    return {
        "short": [short_row(rngs[0]) for _ in range(rows)],
        "long": [cut_to(rngs[1], int(rngs[1].integers(*LONG_CHARS, endpoint=True)),
                        ENGLISH_ONLY) for _ in range(rows)],
        "real_text": [real_text_row(rngs[2]) for _ in range(rows)],
        "unseen_script": [unseen_script_row(rngs[3]) for _ in range(rows)],
        "lengths": [cut_to(rngs[4], n, ENGLISH_ONLY) for n in range(1, 401)
                    for _ in range(per_length)],
        "repeats": [repeats_row(rngs[5]) for _ in range(rows)],
        "bands": banded_rows(rngs[6], per_band),
    }
