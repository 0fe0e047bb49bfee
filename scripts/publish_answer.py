"""Publish the study's answer: copy what `bltlab run --frontier` and `bltlab analyze`
wrote (results/answer.json, results/answer.png, results/frontier_<profile>.json,
results/lr_sweep_<profile>.json) into docs/results/, and rewrite the README's answer
(between its `<!-- answer: start -->` and `<!-- answer: end -->` lines) from answer.json,
so the README says exactly what the JSON does (tests/test_docs.py checks that it does).
A profile the new answer lacks (not measured again) keeps its published answer.

    python scripts/publish_answer.py [--results results] [--readme README.md]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bltlab.answer import kept_profiles
from bltlab.errors import BltlabError
from bltlab.fileio import read_json, write_atomic, write_json
from bltlab.report import README_END, README_START, readme_answer

DOCS = Path(__file__).resolve().parents[1] / "docs" / "results"


def replace_section(text: str, section: str) -> str:
    """`text` with its answer section (markers included) replaced by `section`."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise BltlabError(f"the README has no '{README_START}' ... '{README_END}' section")
    return text[:start] + section + text[end + len(README_END):]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--readme", type=Path, default=DOCS.parents[1] / "README.md")
    args = p.parse_args()
    names = ["answer.json", "answer.png", *(f"{kind}_{profile}.json" for kind in (
        "frontier", "lr_sweep") for profile in ("seed", "broad"))]
    published = (read_json(DOCS / "answer.json", "the published answer")
                 if (DOCS / "answer.json").is_file() else None)
    for name in names:
        if (args.results / name).is_file():
            shutil.copyfile(args.results / name, DOCS / name)
            print(f"copied {args.results / name} to {DOCS / name}")
    answer = kept_profiles(read_json(DOCS / "answer.json", "the study's answer"), published)
    write_json(DOCS / "answer.json", answer)
    text = replace_section(args.readme.read_text(encoding="utf-8"), readme_answer(answer))
    write_atomic(args.readme, lambda f: f.write(text))
    print(f"rewrote the answer in {args.readme}")


if __name__ == "__main__":
    main()
