"""The tests and intervals Findings are worded by: exact values from their published formulas and worked examples,
coverage where a percentile bootstrap fails, and a permutation test that sees what interval overlap misses."""

import itertools

import numpy as np
import pytest
import scipy.stats

from sae_sweep import ConfigError
from sae_sweep.analysis.measures.inference import (
    correlation_interval,
    emd_permutation_test,
    proportion_interval,
    score_difference,
    wilson_interval,
)
from sae_sweep.analysis.measures.stats import emd_ci
from sae_sweep.errors import DataError


def test_wilson_interval_exact_values():
    z2 = scipy.stats.norm.ppf(0.975) ** 2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))  # the closed form at k = 0
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + z2)), 1.0)
    lo, hi = wilson_interval(5, 10)  # symmetric about 1/2
    assert (lo, hi) == (pytest.approx(0.236593, abs=1e-6), pytest.approx(0.763407, abs=1e-6))
    with pytest.raises(DataError, match="0 <= k <= n"):
        wilson_interval(11, 10)
    with pytest.raises(ConfigError, match="level"):
        wilson_interval(1, 10, level=95)


def test_proportion_interval_of_a_mask():
    assert proportion_interval([1, 0, 0, 0]) == (0.25, *wilson_interval(1, 4))
    p, lo, hi = proportion_interval(np.zeros(256, dtype=bool))
    assert p == 0.0 and lo == 0.0 and hi > 0.01  # never collapses to the point 0
    with pytest.raises(DataError, match="Boolean"):
        proportion_interval([0, 1, 2])
    with pytest.raises(DataError, match="empty"):
        proportion_interval([])


def test_wilson_covers_small_proportions_where_the_percentile_bootstrap_does_not():
    """p = 0.01 at n = 256 (the issue's case): exact coverage over every k, weighted by its binomial probability."""
    n, p = 256, 0.01
    k = np.arange(n + 1)
    weight = scipy.stats.binom.pmf(k, n, p)
    wilson = sum(
        w
        for ki, w in zip(k, weight, strict=True)
        if wilson_interval(int(ki), n)[0] <= p <= wilson_interval(int(ki), n)[1]
    )
    boot_lo, boot_hi = (scipy.stats.binom.ppf([0.025, 0.975], n, k[:, None] / n) / n).T  # percentile bootstrap
    boot = weight[(boot_lo <= p) & (p <= boot_hi)].sum()
    assert wilson >= 0.93 and boot < 0.92


def test_score_difference_matches_newcombes_worked_example():
    """Newcombe (1998), Statistics in Medicine 17:873, Table II example (a): 56/70 - 48/80, method 10."""
    d, lo, hi = score_difference(56, 70, 48, 80)
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)
    d, lo, hi = score_difference(48, 80, 56, 70)  # swapping the sides mirrors the interval
    assert (d, lo, hi) == (pytest.approx(-0.2), pytest.approx(-0.3339, abs=1e-4), pytest.approx(-0.0524, abs=1e-4))


def test_score_difference_of_counts_scales_each_side_by_its_n():
    d, lo, hi = score_difference(300, 1024, 200, 512, counts=True)
    assert d == 100
    l1, u1 = wilson_interval(300, 1024)
    l2, u2 = wilson_interval(200, 512)
    assert lo == pytest.approx(100 - np.hypot(300 - 1024 * l1, 512 * u2 - 200))
    assert hi == pytest.approx(100 + np.hypot(1024 * u1 - 300, 200 - 512 * l2))


def test_emd_permutation_test_exact_on_a_tiny_sample():
    """u = {0, 1}, v = {2, 3}: of the 6 relabellings, 2 give W1 = 2 (the observed), so p -> 1/3."""
    w1, p = emd_permutation_test([0.0, 1.0], [2.0, 3.0], n_perm=20_000, seed=1)
    assert w1 == 2.0 and p == pytest.approx(1 / 3, abs=0.01)
    values = [0.0, 1.0, 2.0, 3.0]
    exact = [
        scipy.stats.wasserstein_distance(a, [x for x in values if x not in a])
        for a in itertools.combinations(values, 2)
    ]
    assert np.mean(np.array(exact) >= 2.0) == pytest.approx(1 / 3)
    assert emd_permutation_test([0.0], [0.0], n_perm=10)[1] == 1.0  # identical samples: every relabelling ties


def test_emd_permutation_test_agrees_with_scipy_and_rejects_bad_input():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=37), rng.normal(0.5, size=61)
    assert emd_permutation_test(u, v, n_perm=10)[0] == pytest.approx(scipy.stats.wasserstein_distance(u, v))
    with pytest.raises(DataError, match="empty"):
        emd_permutation_test([], v)
    with pytest.raises(DataError, match="non-finite"):
        emd_permutation_test([np.nan], v)
    with pytest.raises(ConfigError, match="n_perm"):
        emd_permutation_test(u, v, n_perm=0)


def test_permutation_test_is_calibrated_under_the_null():
    """Same distribution on both sides: p < 0.05 in about 5% of 200 trials (binomial 99.9% bound: at most 22)."""
    rejections = sum(
        emd_permutation_test(*np.random.default_rng(100 + t).normal(size=(2, 200)), n_perm=200, seed=t)[1] < 0.05
        for t in range(200)
    )
    assert rejections <= 22


def test_permutation_test_detects_a_shift_that_interval_overlap_misses():
    """The old verdict asked whether EMD(learned, rand)'s bootstrap interval cleared EMD(rand, rand')'s; on a shift
    of 0.06 sd at 1500 values a side the intervals overlap while the test rejects at 0.01."""
    rng = np.random.default_rng(0)
    learned, r1, r2 = rng.normal(0.06, 1, 1500), rng.normal(0, 1, 1500), rng.normal(0, 1, 1500)
    _, lo, _ = emd_ci(learned, r1, seed=1)
    _, _, hi_between = emd_ci(r1, r2, seed=2)
    assert lo <= hi_between  # overlap: the old rule said "not distinguishable"
    assert emd_permutation_test(learned, r1, n_perm=1000, seed=3)[1] < 0.01


def test_correlation_interval():
    lo, hi = correlation_interval(0.5, 103)  # z = atanh(0.5) +- 1.96 / 10
    assert lo == pytest.approx(np.tanh(np.arctanh(0.5) - 0.196), abs=1e-4) and hi == pytest.approx(0.6323, abs=1e-4)
    assert correlation_interval(1.0, 10) == (1.0, 1.0)
    with pytest.raises(DataError, match="at least 4"):
        correlation_interval(0.5, 3)
