"""Statistics: summaries over seeds and curves, and comparisons of two models on the
same test rows.

- Mean and spread over seeds; the first point of a curve that reaches a level.
- Wilson score interval for one model's exact-match rate.
- McNemar's exact test on the paired exact-match outcomes (only rows where the models
  disagree carry information; under H0 each disagreement goes either way with p = 1/2).
- Paired bootstrap confidence intervals for differences of per-row metrics (rows are
  resampled together, so the pairing is kept).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float | None]) -> dict | None:
    """Mean, sample standard deviation (0 for one value) and count of the values given
    (None left out); None when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}


def first_reaching(curve: Sequence[dict], level: float, x: str = "train_flops",
                   y: str = "val_exact_match") -> float | None:
    """`x` at the first point of `curve` whose `y` is at least `level`, or None."""
    return next((p[x] for p in curve if p.get(y, 0) >= level), None)


def reach_and_stay(points: Sequence[dict], level: float) -> float | None:
    """Training FLOPs at the first epoch from which validation exact match stays at or
    above `level` to the end (None when it does not end there)."""
    at = None
    for p in points:  # the start of the last run of epochs at or above the level
        at = (at if at is not None else p["train_flops"]) if p["val_exact_match"] >= level \
            else None
    return at


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy)."""
    if n == 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest  # scipy takes half a second to import: when used

    ci = binomtest(successes, n).proportion_ci(confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """McNemar's exact (binomial) test on paired outcomes: two-sided p-value and the
    discordant counts (only A right, only B right)."""
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a.shape != b.shape:
        raise ValueError("paired outcomes must have the same length")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    from scipy.stats import binomtest

    p = 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": p}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10000,
                     confidence: float = 0.95, seed: int = 0) -> dict:
    """Mean of (a - b) over rows and its percentile bootstrap interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired values must be non-empty and of the same length")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"mean_difference": float(diff.mean()), "ci_low": float(low), "ci_high": float(high),
            "confidence": confidence, "resamples": resamples}
