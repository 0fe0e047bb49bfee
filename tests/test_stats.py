"""The statistics match textbook values and behave at the edges."""

import numpy as np
import pytest

from bltlab.stats import mcnemar_exact, paired_bootstrap, wilson_interval


def test_wilson_interval_textbook_value():
    low, high = wilson_interval(81, 263)  # Wilson (1927) example as in Newcombe (1998)
    assert low == pytest.approx(0.2553, abs=1e-4) and high == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_mcnemar_counts_only_disagreements():
    a = [True] * 90 + [True] * 8 + [False] * 2
    b = [True] * 90 + [False] * 8 + [True] * 2
    out = mcnemar_exact(a, b)
    assert (out["only_a_correct"], out["only_b_correct"]) == (8, 2)
    assert out["p_value"] == pytest.approx(0.109375)  # 2 * P(X <= 2), X ~ Bin(10, 1/2)
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_paired_bootstrap_interval_covers_the_difference():
    rng = np.random.default_rng(1)
    a = rng.random(500)
    out = paired_bootstrap(a + 0.1, a, resamples=2000)
    assert out["mean_difference"] == pytest.approx(0.1)
    assert out["ci_low"] == pytest.approx(0.1) and out["ci_high"] == pytest.approx(0.1)
    noisy = paired_bootstrap(a, rng.random(500), resamples=2000)
    assert noisy["ci_low"] < noisy["mean_difference"] < noisy["ci_high"]
