"""The study's answer, read off each profile's compute frontier (`frontier_<profile>.json`).

Per profile and family: the front (the cheapest point that passes, mean validation exact
match ≥ PASS_AT over its seeds, and the most expensive cheaper point that fails: both
must exist for a front to be located); the inference FLOPs per row the family needs to
reach each MATCHED level of exact match on the reserved final set, with 95% intervals
from a bootstrap over each point's seeds and over the set's rows (the same rows for
every model); a non-inferiority test of the BLT's cheapest passing point against each
baseline's at a margin stated before any grid ran (NONINFERIORITY_MARGIN); and the
training FLOPs to reach and stay at 99% validation exact match. The verdict is built
from these only, and says "not established" where intervals overlap.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bltlab import paths
from bltlab.experiments import MATCHED, NONINFERIORITY_MARGIN, PASS_AT
from bltlab.fileio import read_json
from bltlab.stats import wilson_interval

BASELINES = ("char", "byte")
RESAMPLES = 1000
OUTCOME = {"1": 1, "0": 0, "-": -1}


def outcomes(point: dict) -> np.ndarray:
    """A run's final-set rows, from its `final_outcomes` (bltlab.evaluation.row_outcomes):
    1 right, 0 wrong, -1 not scored (in its training stream)."""
    return np.array([OUTCOME[c] for c in point["final_outcomes"]], dtype=np.int8)


def accuracy(runs: list[np.ndarray], rows: np.ndarray) -> float:
    """Mean over runs (seeds) of exact match on `rows` (a run's unscored rows left out)."""
    rates = []
    for o in runs:
        picked = o[rows]
        scored = picked >= 0
        rates.append(picked[scored].mean() if scored.any() else 0.0)
    return float(np.mean(rates))


def front(table: dict[str, dict], family: str) -> dict[str, Any]:
    """The cheapest passing point and the most expensive failing point cheaper than it."""
    mine = {n: r for n, r in table.items() if r["family"] == family}
    cost = {n: r["inference_flops_per_row"]["mean"] for n, r in mine.items()}
    passing = [n for n, r in mine.items() if r["val_exact_match"]["mean"] >= PASS_AT]
    best = min(passing, key=cost.get) if passing else None
    failing = [n for n in mine if n not in passing and (best is None or cost[n] < cost[best])]
    closest = max(failing, key=cost.get) if failing else None
    return {"cheapest_passing": best, "cheapest_failing": closest,
            "located": best is not None and closest is not None}


def cheapest_at(levels: dict[str, float], cost: dict[str, float], level: float) -> str | None:
    reached = [n for n, acc in levels.items() if acc >= level]
    return min(reached, key=cost.get) if reached else None


def matched(family_runs: dict[str, list[np.ndarray]], cost: dict[str, float],
            rng: np.random.Generator) -> dict[str, dict]:
    """Per MATCHED level: the cheapest point reaching it on the final set and its FLOPs,
    with a 95% bootstrap interval (seeds and rows resampled; a replicate where no point
    reaches the level counts as unbounded)."""
    n_rows = len(next(iter(family_runs.values()))[0])
    every = np.arange(n_rows)
    levels = {n: accuracy(r, every) for n, r in family_runs.items()}
    draws: dict[float, list[float]] = {x: [] for x in MATCHED}
    for _ in range(RESAMPLES):
        rows = rng.integers(0, n_rows, n_rows)
        acc = {n: accuracy([r[i] for i in rng.integers(0, len(r), len(r))], rows)
               for n, r in family_runs.items()}
        for x in MATCHED:
            name = cheapest_at(acc, cost, x)
            draws[x].append(cost[name] if name else math.inf)
    out = {}
    for x in MATCHED:
        name = cheapest_at(levels, cost, x)
        low, high = np.quantile(draws[x], [0.025, 0.975], method="inverted_cdf")
        out[f"{x:g}"] = {"point": name, "flops": cost[name] if name else None,
                         "ci95": [float(low), float(high) if math.isfinite(high) else None],
                         "share_reached": float(np.mean(np.isfinite(draws[x])))}
    return out


def noninferiority(a: list[np.ndarray], b: list[np.ndarray],
                   rng: np.random.Generator) -> dict[str, Any]:
    """Exact match of `a` minus `b` on the final set (paired rows, seeds averaged): the
    difference, its 95% interval and one-sided 95% lower bound; `a` is non-inferior when
    that bound is above -NONINFERIORITY_MARGIN."""
    n_rows = len(a[0])
    every = np.arange(n_rows)
    diffs = []
    for _ in range(RESAMPLES):
        rows = rng.integers(0, n_rows, n_rows)
        diffs.append(accuracy([a[i] for i in rng.integers(0, len(a), len(a))], rows)
                     - accuracy([b[i] for i in rng.integers(0, len(b), len(b))], rows))
    lower = float(np.quantile(diffs, 0.05, method="inverted_cdf"))
    return {"difference": accuracy(a, every) - accuracy(b, every),
            "ci95": [float(v) for v in np.quantile(diffs, [0.025, 0.975],
                                                   method="inverted_cdf")],
            "lower_bound_95": lower, "margin": NONINFERIORITY_MARGIN,
            "non_inferior": lower > -NONINFERIORITY_MARGIN}


def profile_answer(frontier: dict, seed: int = 0) -> dict[str, Any]:
    """Everything the verdict of one profile reads."""
    profile, table = frontier["profile"], frontier["table"]
    rng = np.random.default_rng(seed)
    runs: dict[str, dict[str, list[np.ndarray]]] = {}
    for p in frontier["points"]:
        runs.setdefault(p["family"], {}).setdefault(p["name"], []).append(
            outcomes(p))
    families = {}
    for family, family_runs in runs.items():
        cost = {n: table[n]["inference_flops_per_row"]["mean"] for n in family_runs}
        fr = front(table, family)
        stay = [(table[n]["train_flops_to_stay_0.99"]["mean"], n, len(table[n]["seeds"]))
                for n in family_runs if table[n]["train_flops_to_stay_0.99"] and
                table[n]["train_flops_to_stay_0.99"]["n"] == len(table[n]["seeds"])]
        families[family] = {
            **fr, "points": [point_summary(n, table[n], family_runs[n]) for n in family_runs],
            "flops_at_matched_accuracy": matched(family_runs, cost, rng),
            "train_flops_to_stay_0.99": (dict(zip(("flops", "point", "seeds"), min(stay)))
                                         if stay else None)}
    tests = {}
    blt = families.get("blt", {}).get("cheapest_passing")
    for base in BASELINES:
        other = families.get(base, {}).get("cheapest_passing")
        if blt and other:
            tests[f"blt vs {base}"] = {"points": [blt, other], **noninferiority(
                runs["blt"][blt], runs[base][other], rng)}
    return {"profile": profile, "budget_train_flops": frontier["budget_train_flops"],
            "learning_rates": frontier.get("learning_rates"), "runs": len(frontier["points"]),
            "run_hours": sum(p.get("train_seconds", 0.0) + p.get("eval_seconds", 0.0)
                             for p in frontier["points"]) / 3600,
            "final_rows_in_training": sorted({p.get("final_rows_in_training", 0)
                                              for p in frontier["points"]}),
            "families": families,
            "noninferiority": tests, "missing_runs": frontier.get("missing", {})}


def point_summary(name: str, row: dict, runs: list[np.ndarray]) -> dict[str, Any]:
    right = sum(int((o == 1).sum()) for o in runs)
    scored = sum(int((o >= 0).sum()) for o in runs)
    return {"name": name, "seeds": row["seeds"], "parameters": row["parameters"],
            "val_exact_match": row["val_exact_match"]["mean"],
            "final_exact_match": right / scored if scored else None,
            "final_ci95": wilson_interval(right, scored), "final_rows_scored": scored,
            "inference_flops_per_row": row["inference_flops_per_row"]["mean"],
            "inference_flops_by_part": row.get("inference_flops_by_part"),
            "bytes_per_patch": (row.get("bytes_per_patch") or {}).get("mean"),
            "train_flops_to_stay_0.99": (row["train_flops_to_stay_0.99"] or {}).get("mean")}


def compare(blt: dict, base: dict) -> str:
    """'fewer', 'more' or 'not established' from two matched-accuracy intervals."""
    if not blt["point"] or not base["point"]:
        return "not established"
    (bl, bh), (ol, oh) = blt["ci95"], base["ci95"]
    if bh is not None and bh < ol:
        return "fewer"
    if oh is not None and bl > oh:
        return "more"
    return "not established"


def clause(base: str, word: str, m_blt: dict, m_base: dict, level: str, test: dict | None
           ) -> str:
    """What the BLT needs against one baseline, in words."""
    at = f"{float(level):.1%} final-set exact match"
    if word == "not established":
        flops = (f" ({m_blt['flops'] / 1e6:.1f}M vs {m_base['flops'] / 1e6:.1f}M, intervals "
                 "overlapping)" if m_blt["point"] and m_base["point"] else "")
        text = f"against {base}, fewer or more inference FLOPs at {at} is not established{flops}"
    else:
        text = (f"against {base}, the BLT needs {word} inference FLOPs per row at {at} "
                f"({m_blt['flops'] / 1e6:.1f}M vs {m_base['flops'] / 1e6:.1f}M)")
    if test is not None:
        text += (", and is non-inferior in accuracy" if test["non_inferior"]
                 else ", and is not shown non-inferior in accuracy")
    return text


def verdict(answer: dict[str, Any], level: str = "0.995") -> str:
    """The answer in words, built only from the answer's figures."""
    parts = []
    for profile, a in answer["profiles"].items():
        fam = a["families"]
        if "blt" not in fam:
            continue
        said = []
        for base in (b for b in BASELINES if b in fam):
            m_blt, m_base = (fam[f]["flops_at_matched_accuracy"][level] for f in ("blt", base))
            said.append(clause(base, compare(m_blt, m_base), m_blt, m_base, level,
                               a["noninferiority"].get(f"blt vs {base}")))
        train = {f: fam[f]["train_flops_to_stay_0.99"] for f in fam
                 if fam[f]["train_flops_to_stay_0.99"]}
        if "blt" in train and any(b in train for b in BASELINES):
            best = min((train[b] for b in BASELINES if b in train), key=lambda t: t["flops"])
            said.append(f"to train, it needs {train['blt']['flops'] / best['flops']:.1f}x the "
                        "FLOPs of the cheapest baseline to reach and stay at 99% validation "
                        f"exact match ({picked(train['blt'])} vs {picked(best)})")
        unlocated = [f for f in fam if not fam[f]["located"]]
        if unlocated:
            said.append(f"the front is not located for {', '.join(unlocated)}")
        if a["missing_runs"]:
            said.append(f"{len(a['missing_runs'])} runs of its grid are not finished "
                        "(their points have fewer seeds)")
        parts.append(f"{profile.capitalize()} profile: " + "; ".join(said))
    return ". ".join(parts) + "." if parts else "Not enough measurements to answer."


def n_seeds(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


def picked(train: dict) -> str:
    """A training pick's point and its seeds, as the verdict names it."""
    return f"{train['point']}, {n_seeds(train.get('seeds', 1))}"


def build(results_dir: str | Path) -> dict[str, Any] | None:
    """answer.json's content from every profile's frontier found (None when none is)."""
    results_dir = Path(results_dir)
    profiles = {}
    for profile in ("seed", "broad"):
        path = results_dir / paths.frontier(profile)
        frontier = read_json(path, "frontier results") if path.is_file() else None
        if frontier and not all("final_outcomes" in p for p in frontier.get("points", [])):
            print(f"warning: {path} keeps no final-set outcomes (written before bltlab kept "
                  "them); the published answer for this profile is left as it is")
        elif frontier:
            profiles[profile] = profile_answer(frontier)
    if not profiles:
        return None
    answer = {"pass_at_validation": PASS_AT, "matched_levels": list(MATCHED),
              "noninferiority_margin": NONINFERIORITY_MARGIN, "resamples": RESAMPLES,
              "profiles": profiles}
    answer["verdict"] = verdict(answer)
    return answer


def kept_profiles(answer: dict, published: dict | None) -> dict:
    """`answer` with every profile the published answer has and it lacks (a profile not
    measured again keeps its published answer), the verdict built over them all."""
    missing = {k: v for k, v in (published or {}).get("profiles", {}).items()
               if k not in answer["profiles"]}
    if not missing:
        return answer
    profiles = {k: (answer["profiles"].get(k) or missing[k]) for k in ("seed", "broad")
                if k in answer["profiles"] or k in missing}
    merged = {**answer, "profiles": profiles}
    return {**merged, "verdict": verdict(merged)}
