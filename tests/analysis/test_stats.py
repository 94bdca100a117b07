"""Bootstrap intervals, the null-plus-Beta mixture fit and shared features: exact hand cases and seeded trials."""

import dataclasses
import warnings

import numpy as np
import pytest
import scipy.stats

from sae_sweep import ConfigError, DataError
from sae_sweep.analysis.measures import mixture, stats
from sae_sweep.analysis.measures.mixture import MixtureFit, fit_null_mixture
from sae_sweep.analysis.measures.nulls import analytic_null_mean, sample_analytic_null
from sae_sweep.analysis.measures.stats import bootstrap_ci, emd_ci, shared_fraction

K, M = 128, 8192  # the note's width and reference dictionary size


# ------------------------------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_of_two_points_has_exact_percentiles():
    # Means of 2-point resamples of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    assert bootstrap_ci([0.0, 1.0], np.mean, n_boot=4000, level=0.95) == (0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], np.mean, n_boot=4000, level=0.4) == (0.5, 0.5)  # 30% and 70% quantiles


def test_bootstrap_ci_resamples_whole_rows():
    x = np.repeat(np.arange(20.0)[:, None], 2, axis=1)  # row i = (i, i)
    # Rows kept whole: the two columns stay equal in every resample.
    assert bootstrap_ci(x, lambda r: np.abs(r[:, 0] - r[:, 1]).max(), n_boot=200) == (0.0, 0.0)
    assert bootstrap_ci(np.full(30, 3.0), np.mean, n_boot=50) == (3.0, 3.0)


def test_bootstrap_ci_of_a_mean_matches_normal_theory_and_is_seeded():
    x = np.random.default_rng(0).standard_normal(400)
    lo, hi = bootstrap_ci(x, np.mean, n_boot=2000, seed=1)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / np.sqrt(400), rel=0.1)
    assert bootstrap_ci(x, np.mean, n_boot=2000, seed=1) == (lo, hi)
    assert bootstrap_ci(x, np.mean, n_boot=2000, seed=2) != (lo, hi)


def test_bootstrap_ci_rejects_bad_input():
    with pytest.raises(DataError, match="at least one row"):
        bootstrap_ci([], np.mean)
    with pytest.raises(ConfigError, match="level"):
        bootstrap_ci([1.0, 2.0], np.mean, level=95)
    with pytest.raises(ConfigError, match="n_boot"):
        bootstrap_ci([1.0, 2.0], np.mean, n_boot=0)
    with pytest.raises(DataError, match="non-finite value on 10 of 10"):
        bootstrap_ci([1.0, 2.0], lambda r: np.nan, n_boot=10)


# ------------------------------------------------------------------------------------------------------------------ EMD
def test_emd_replicates_equal_scipy_on_explicit_resamples():
    rng = np.random.default_rng(4)
    for n_u, n_v in [(40, 40), (37, 61), (1, 5)]:
        # Rounded to one decimal so that values tie within and across the samples.
        u = np.sort(np.round(rng.standard_normal(n_u), 1))
        v = np.sort(np.round(rng.standard_normal(n_v) + 0.3, 1))
        idx_u, idx_v = rng.integers(0, n_u, (25, n_u)), rng.integers(0, n_v, (25, n_v))
        counts_u = np.stack([np.bincount(row, minlength=n_u) for row in idx_u], axis=1)  # (n_u, 25)
        counts_v = np.stack([np.bincount(row, minlength=n_v) for row in idx_v], axis=1)  # (n_v, 25)
        got = stats._emd_replicates(u, v, counts_u, counts_v)
        want = [scipy.stats.wasserstein_distance(u[i], v[j]) for i, j in zip(idx_u, idx_v, strict=True)]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_resample_counts_are_resamples_of_size_n():
    counts = stats._resample_counts(np.random.default_rng(5), 50, 400)
    assert counts.shape == (50, 400)
    np.testing.assert_array_equal(counts.sum(axis=0), 50)  # every replicate has n values
    assert counts.mean(axis=1) == pytest.approx(np.ones(50), abs=0.2)  # every value is equally likely
    assert counts.min() == 0 and counts.max() >= 3  # with replacement


def test_emd_ci_exact_cases():
    assert emd_ci(np.zeros(7), np.ones(4), n_boot=50) == (1.0, 1.0, 1.0)  # every resample is 0s against 1s
    assert emd_ci(np.full(5, 2.0), np.full(9, 2.0), n_boot=50) == (0.0, 0.0, 0.0)
    rng = np.random.default_rng(6)
    u, v = rng.standard_normal(300), rng.exponential(size=170)
    w, lo, hi = emd_ci(u, v, n_boot=500)
    assert w == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-12)
    assert lo < w < hi
    assert emd_ci(u, v, n_boot=500) == (w, lo, hi)  # seeded


def test_emd_ci_covers_the_true_value_in_90_percent_of_200_trials():
    covered = 0
    for trial in range(200):
        rng = np.random.default_rng(2000 + trial)
        u, v = rng.standard_normal(400), rng.standard_normal(400) + 0.25  # W1 of a shift is the shift
        _, lo, hi = emd_ci(u, v, n_boot=300, level=0.95, seed=trial)
        covered += lo <= 0.25 <= hi
    assert covered >= 180


def test_emd_ci_rejects_empty_or_nan_samples():
    with pytest.raises(DataError, match="u is empty"):
        emd_ci([], [1.0])
    with pytest.raises(DataError, match="v holds 1 non-finite"):
        emd_ci([1.0], [np.nan, 2.0])


# -------------------------------------------------------------------------------------------------------------- mixture
def planted(n_null: int, n_real: int, seed: int) -> np.ndarray:
    """n_null exact null MCS values (K, M) and n_real values from Beta(8, 3), shuffled."""
    real = np.random.default_rng(seed).beta(8, 3, size=n_real)
    return np.random.default_rng(seed + 1).permutation(np.concatenate([sample_analytic_null(n_null, K, M, seed), real]))


@pytest.mark.parametrize("n_null, n_real", [(700, 300), (900, 100), (2000, 2000)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixture_recovers_a_planted_count_within_10_percent(n_null, n_real, seed):
    fit = fit_null_mixture(planted(n_null, n_real, seed), K, M)
    assert fit.converged and fit.n == n_null + n_real
    assert abs(fit.n_real - n_real) <= 0.1 * n_real
    assert fit.n_real == pytest.approx((1 - fit.null_weight) * fit.n, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixture_on_null_only_data_finds_almost_nothing_real(seed):
    fit = fit_null_mixture(sample_analytic_null(1000, K, M, seed), K, M)
    assert fit.n_real < 0.05 * fit.n


def misfit_null(kind: str, n: int, seed: int) -> np.ndarray:
    """n null-like MCS values whose law is NOT the exact null for (K, M): shifted, widened, or from half the M."""
    if kind == "half M":
        return sample_analytic_null(n, K, M // 2, seed)
    null = sample_analytic_null(n, K, M, seed)
    mean = analytic_null_mean(K, M)
    return {"+0.012": null + 0.012, "-0.012": null - 0.012, "1.2x wide": mean + 1.2 * (null - mean)}[kind]


@pytest.mark.parametrize("kind", ["+0.012", "-0.012", "1.2x wide", "half M"])
def test_mixture_counts_within_15_percent_when_the_null_is_misspecified(kind):
    """127 real features (Beta(8, 3)) among 3969 null-like ones: the fitted null's shift and scale absorb the misfit
    that the exact null puts into the count (136-270 with it: shown beside, so the test can fail without them)."""
    x = np.concatenate([misfit_null(kind, 3969, seed=0), np.random.default_rng(100).beta(8, 3, 127)])
    fit = fit_null_mixture(x, K, M)
    assert abs(fit.n_real - 127) <= 0.15 * 127
    assert fit.n_real_exact_null > fit.n_real + 5  # the exact null alone overcounts every one of these
    if kind != "+0.012":
        assert fit.n_real_exact_null > 1.15 * 127
    exact = fit_null_mixture(x, K, M, free_null=False)
    assert exact.n_real == pytest.approx(fit.n_real_exact_null) and (exact.shift, exact.scale) == (0.0, 1.0)


def test_mixture_on_shifted_null_only_data_finds_nothing_real():
    x = misfit_null("+0.012", 4096, seed=5)
    fit = fit_null_mixture(x, K, M)
    assert fit.n_real == 0 and fit.shift == pytest.approx(0.012, abs=0.002)
    assert fit.n_real_exact_null > 400  # what trusting the exact null would have said


def test_mixture_on_learned_only_data_finds_everything_real_and_its_shape():
    x = np.random.default_rng(7).beta(8, 3, size=2000)
    assert fit_null_mixture(x, K, M).n_real > 0.99 * x.size  # a free null takes at most a few of the lowest values
    fit = fit_null_mixture(x, K, M, free_null=False)
    assert fit.n_real > 0.99 * fit.n
    ref_a, ref_b, _, _ = scipy.stats.beta.fit(x, floc=0, fscale=1)  # the plain Beta MLE
    assert fit.a == pytest.approx(ref_a, rel=1e-3) and fit.b == pytest.approx(ref_b, rel=1e-3)


def test_posterior_real_separates_the_modes_and_sums_to_n_real():
    x = planted(700, 300, seed=3)
    fit = fit_null_mixture(x, K, M)
    post = fit.posterior_real(np.array([-0.5, 0.0, 0.33, 0.8, 1.0]))
    assert post[0] == post[1] == 0.0  # the learned component lives on (0, 1)
    assert post[2] < 0.01 and post[3] > 0.999 and post[4] == 1.0
    assert fit.posterior_real(x).sum() == pytest.approx(fit.n_real, rel=1e-3)  # EM's fixed point
    assert fit.posterior_real(x).shape == x.shape


def test_posterior_real_is_zero_when_the_null_alone_was_kept():
    fit = MixtureFit(n=10, null_weight=1.0, n_real=0.0, a=8.0, b=3.0, log_likelihood=0.0, iterations=1, K=K, M=M)
    np.testing.assert_array_equal(fit.posterior_real([0.3, 0.9]), [0.0, 0.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.n = 3


def test_beta_mle_matches_scipy_from_a_poor_start():
    x = np.random.default_rng(8).beta(2, 5, size=50_000)
    ref_a, ref_b, _, _ = scipy.stats.beta.fit(x, floc=0, fscale=1)
    for start in [(1.0, 1.0), (1e-3, 1e4), (300.0, 2.0)]:
        a, b = mixture._beta_mle(np.log(x).mean(), np.log1p(-x).mean(), *start)
        assert a == pytest.approx(ref_a, rel=1e-6) and b == pytest.approx(ref_b, rel=1e-6)


def test_mixture_degenerate_inputs_give_sensible_fits_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from deep inside scipy either
        duplicates = fit_null_mixture(np.ones(50), K, M)  # every feature found exactly: all learned
        assert duplicates.n_real == 50
        zeros = fit_null_mixture(np.zeros(50), K, M)  # nothing positive: nothing learned
        assert zeros.n_real == 0 and zeros.null_weight == 1.0
        mixed = fit_null_mixture(np.r_[sample_analytic_null(500, K, M, 9), np.full(5, -0.2), np.ones(20)], K, M)
        assert mixed.n_real == pytest.approx(20, abs=1)
        assert 0 < fit_null_mixture(np.linspace(0.2, 0.9, 10), K, M).n_real <= 10  # the fewest values allowed


def test_mixture_rejects_bad_input():
    with pytest.raises(DataError, match="at least 10 MCS values, got 9"):
        fit_null_mixture(np.full(9, 0.5), K, M)
    with pytest.raises(DataError, match="2 non-finite"):
        fit_null_mixture(np.r_[np.full(20, 0.5), np.nan, np.inf], K, M)
    with pytest.raises(DataError, match=r"cosines in \[-1, 1\]"):
        fit_null_mixture(np.r_[np.full(20, 0.5), 1.5], K, M)
    with pytest.raises(ConfigError, match="K >= 2"):
        fit_null_mixture(np.full(20, 0.5), 1, M)
    with pytest.raises(ConfigError, match="max_iter"):
        fit_null_mixture(np.full(20, 0.5), K, M, max_iter=0)


# ------------------------------------------------------------------------------------------------------ shared features
def test_shared_fraction_counts_a_permuted_copy_with_replaced_rows():
    a = np.eye(8)[:5]  # e1..e5
    b = np.stack([np.eye(8)[i] for i in (3, 5, 0, 6, 1)]) * np.array([[1.0], [2.0], [3.0], [1.0], [0.5]])
    # b holds e4, e1, e2 (scaled) and e6, e7 in place of e3, e5: orthogonal to all of a.
    fraction, matched = shared_fraction(a, b, threshold=0.7)
    assert fraction == 3 / 5
    np.testing.assert_allclose(matched, [1, 1, 0, 1, 0], atol=1e-12)


def test_shared_fraction_threshold_is_inclusive_and_unmatched_rows_are_nan():
    a = np.array([[5.0, 0.0], [0.0, -1.0], [-1.0, -1.0]])
    b = np.array([[3.0, 4.0]])  # cos with a[0] is exactly 0.6, with a[1] and a[2] negative: b goes to a[0]
    fraction, matched = shared_fraction(a, b, threshold=0.6)
    assert fraction == 1 / 3  # a[0] at exactly the threshold; a[1] and a[2] have no partner
    assert matched[0] == 0.6 and np.isnan(matched[1:]).all()
    assert shared_fraction(a[:1], b, threshold=0.61)[0] == 0.0
    with pytest.raises(ConfigError, match="threshold"):
        shared_fraction(a, b, threshold=1.5)
