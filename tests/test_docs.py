"""The README says what the published results say: its answer section is the one
scripts/publish_answer.py generates from docs/results/answer.json."""

import json
from pathlib import Path

import pytest

from bltlab.report import README_END, README_START, readme_answer

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_answer_is_generated_from_answer_json():
    path = ROOT / "docs" / "results" / "answer.json"
    if not path.is_file():
        pytest.skip("no published answer yet")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index(README_START):readme.index(README_END) + len(README_END)]
    assert section == readme_answer(json.loads(path.read_text(encoding="utf-8")))


def test_every_docs_results_file_is_cited():
    """docs/results/ holds only what the README or the findings page cite."""
    cited = "".join((ROOT / p).read_text(encoding="utf-8") for p in (
        "README.md", "docs/results.md"))
    unused = [p.name for p in (ROOT / "docs" / "results").iterdir() if p.name not in cited]
    assert unused == []
