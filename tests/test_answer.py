"""The answer read off the fronts: located fronts, FLOPs at matched accuracy with
intervals, non-inferiority at the stated margin, and a verdict that says what is not
established."""

import numpy as np
import pytest

from bltlab import answer
from bltlab.evaluation import row_outcomes, write_predictions
from bltlab.experiments import NONINFERIORITY_MARGIN

ROWS = 400


def run(wrong: int, trained: int = 0) -> str:
    """A frontier run's final-set outcomes: `wrong` rows wrong, `trained` rows in its
    training stream (not scored)."""
    return "".join("-" if i >= ROWS - trained else "0" if i < wrong else "1"
                   for i in range(ROWS))


def row(family, val, flops, seeds=(0, 1, 2), stay=1e12):
    return {"family": family, "seeds": list(seeds), "parameters": 1000,
            "val_exact_match": {"mean": val}, "inference_flops_per_row": {"mean": flops},
            "train_flops_to_stay_0.99": {"mean": stay, "n": len(seeds)} if stay else None}


@pytest.fixture
def frontier():
    table = {"char-small": row("char", 0.98, 2e6, stay=None),
             "char-mid": row("char", 0.999, 4e6), "char-big": row("char", 1.0, 9e6),
             "blt-small": row("blt", 0.97, 1e6, stay=None),
             "blt-mid": row("blt", 0.998, 3e6, stay=3e12)}
    wrong = {"char-small": 8, "char-mid": 1, "char-big": 0, "blt-small": 12, "blt-mid": 2}
    points = []
    for name, r in table.items():
        for seed in r["seeds"]:
            points.append({"name": name, "family": r["family"], "seed": seed,
                           "final_outcomes": run(wrong[name], 3 if name == "blt-mid" else 0)})
    return {"profile": "seed", "budget_train_flops": 4e12, "table": table, "points": points}


def test_a_runs_final_set_rows_are_kept_as_outcomes(tmp_path):
    """1 right, 0 wrong, - in the training stream (not scored): what answer.json reads."""
    path = tmp_path / "predictions_final.csv"
    write_predictions(path, ["ab", "cd", "ef"], ["ba", "dc", "fe"], ["ba", "xx", "fe"],
                      [False, False, True])
    assert row_outcomes(path) == "10-"
    assert answer.outcomes({"final_outcomes": "10-"}).tolist() == [1, 0, -1]


def test_a_front_is_the_cheapest_passing_point_and_a_cheaper_failing_one(frontier):
    got = answer.front(frontier["table"], "char")
    assert got == {"cheapest_passing": "char-mid", "cheapest_failing": "char-small",
                   "located": True}
    lone = {"char-mid": row("char", 0.999, 4e6)}
    assert not answer.front(lone, "char")["located"]  # nothing cheaper fails: not located


def test_matched_accuracy_intervals_and_the_verdict(frontier):
    a = answer.profile_answer(frontier)
    char, blt = (a["families"][f]["flops_at_matched_accuracy"] for f in ("char", "blt"))
    assert char["0.99"]["point"] == "char-mid" and char["0.99"]["flops"] == 4e6
    assert blt["0.99"]["point"] == "blt-mid"  # 2 wrong of 397 scored rows: 99.5%
    low, high = blt["0.99"]["ci95"]
    assert low <= 3e6 and (high is None or high >= 3e6)
    assert char["0.999"]["point"] == "char-big"
    test = a["noninferiority"]["blt vs char"]
    assert test["points"] == ["blt-mid", "char-mid"] and test["margin"] == NONINFERIORITY_MARGIN
    assert test["difference"] == pytest.approx(-2 / 397 + 1 / 400, abs=1e-9)
    assert a["families"]["blt"]["points"][1]["final_rows_scored"] == 3 * 397
    text = answer.verdict({"profiles": {"seed": a}})
    assert text.startswith("Seed profile: against char, ") and "99.5% final-set" in text
    assert "not shown non-inferior in accuracy" in text  # 2 of 397 wrong vs 1 of 400
    assert "it needs 3.0x the FLOPs" in text and "not finished" not in text
    assert "(blt-mid, 3 seeds vs char-big, 3 seeds)" in text  # the picks, their seeds
    a["missing_runs"] = {"blt-mid seed 2": "not trained"}
    assert "1 runs of its grid are not finished" in answer.verdict({"profiles": {"seed": a}})


def test_overlapping_intervals_are_not_established():
    same = {"point": "a", "flops": 1e6, "ci95": [0.9e6, 1.2e6]}
    assert answer.compare(same, {"point": "b", "flops": 1.1e6, "ci95": [1e6, 1.3e6]}) == \
        "not established"
    assert answer.compare(same, {"point": "b", "flops": 2e6, "ci95": [1.5e6, 3e6]}) == "fewer"
    assert answer.compare({"point": None, "flops": None, "ci95": [np.inf, None]}, same) == \
        "not established"


def test_a_profile_not_measured_again_keeps_its_published_answer(tmp_path, frontier):
    """A frontier file without final-set outcomes (written before bltlab kept them) is left
    out of a new answer, and publishing keeps that profile's published answer."""
    import json

    broad = {**frontier, "profile": "broad"}
    old = {**frontier, "points": [{k: v for k, v in p.items() if k != "final_outcomes"}
                                  for p in frontier["points"]]}
    (tmp_path / "frontier_broad.json").write_text(json.dumps(broad))
    (tmp_path / "frontier_seed.json").write_text(json.dumps(old))
    new = answer.build(tmp_path)
    assert list(new["profiles"]) == ["broad"]
    (tmp_path / "before").mkdir()
    (tmp_path / "before" / "frontier_seed.json").write_text(json.dumps(frontier))
    published = answer.build(tmp_path / "before")
    merged = answer.kept_profiles(new, published)
    assert list(merged["profiles"]) == ["seed", "broad"]
    assert merged["profiles"]["seed"] == published["profiles"]["seed"]
    assert "Seed profile" in merged["verdict"] and "Broad profile" in merged["verdict"]
    assert answer.kept_profiles(merged, published) == merged
