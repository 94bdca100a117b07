"""Max cosine similarity, the analytic and sampled random nulls, EMD and Hungarian matching on hand-made inputs."""

import itertools

import numpy as np
import pytest
import scipy.stats
import torch

from sae_sweep import ConfigError, DataError
from sae_sweep.analysis.measures import mcs
from sae_sweep.analysis.measures.mcs import hungarian_match, max_cosine_similarity, rowwise_cosine
from sae_sweep.analysis.measures.nulls import (
    activation_covariance,
    activation_dictionary,
    analytic_null_cdf,
    analytic_null_logpdf,
    analytic_null_mean,
    analytic_null_pdf,
    analytic_null_quantile,
    gaussian_dictionary,
    random_dictionary,
    sample_analytic_null,
    sampled_null,
)
from sae_sweep.analysis.measures.stats import emd, emd_matrix


def unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_mcs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The naive float64 reference: normalise, full product, max and argmax."""
    sim = unit(a) @ unit(b).T
    return sim.max(axis=1), sim.argmax(axis=1)


# ------------------------------------------------------------------------------------------------------------------ MCS
def test_permuted_copy_matches_itself_and_indices_invert_the_permutation():
    a = random_dictionary(50, 16, seed=0)
    perm = np.random.default_rng(1).permutation(50)
    values, indices = max_cosine_similarity(a, a[perm])
    assert values.dtype == np.float32 and indices.dtype == np.int64
    np.testing.assert_allclose(values, 1.0, atol=1e-6)
    assert values.max() <= 1.0  # clamped: rounding must not report a cosine above 1
    np.testing.assert_array_equal(perm[indices], np.arange(50))  # b[indices[i]] = a[perm[indices[i]]] = a[i]


def test_orthogonal_complement_gives_zero():
    rng = np.random.default_rng(2)
    a = np.zeros((7, 8), dtype=np.float32)
    a[:, :3] = rng.standard_normal((7, 3))  # span(e1..e3)
    b = np.zeros((11, 8), dtype=np.float32)
    b[:, 3:] = rng.standard_normal((11, 5))  # span(e4..e8)
    values, _ = max_cosine_similarity(a, b)
    np.testing.assert_allclose(values, 0.0, atol=1e-6)


def test_hand_computed_2d_case():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]], dtype=np.float32)
    b = np.array([[1.0, 1.0], [3.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    # Row 0 is parallel to b[1]; row 1 is at 45 degrees to b[0] and orthogonal to the others;
    # row 2 is at 45 degrees to b[2] (cos = 1/sqrt 2) and opposite to b[0] (cos = -1).
    values, indices = max_cosine_similarity(a, b)
    np.testing.assert_allclose(values, [1.0, 1 / np.sqrt(2), 1 / np.sqrt(2)], atol=1e-6)
    np.testing.assert_array_equal(indices, [1, 0, 2])


def test_accepts_torch_tensors_and_transposed_views():
    decoder = torch.randn(12, 40, generator=torch.Generator().manual_seed(3))  # (d_in, dict_size): features are columns
    values, indices = max_cosine_similarity(decoder.T, decoder.T.numpy())
    np.testing.assert_allclose(values, 1.0, atol=1e-6)
    np.testing.assert_array_equal(indices, np.arange(40))
    reversed_view = decoder.T.numpy()[::-1]  # negative strides: torch cannot share it, so it is copied
    values, indices = max_cosine_similarity(reversed_view, decoder.T)
    np.testing.assert_array_equal(indices, np.arange(40)[::-1])


@pytest.mark.parametrize("col_block", [4096, 7, 1])  # one block, ragged blocks, one column per block
def test_chunked_equals_unchunked(monkeypatch, col_block):
    monkeypatch.setattr(mcs, "_COL_BLOCK", col_block)
    a, b = random_dictionary(40, 24, seed=4), random_dictionary(53, 24, seed=5)
    whole_v, whole_i = max_cosine_similarity(a, b, chunk_size=10_000)
    chunk_v, chunk_i = max_cosine_similarity(a, b, chunk_size=3)
    ref_v, ref_i = brute_mcs(a, b)
    np.testing.assert_allclose(chunk_v, whole_v, atol=1e-6)
    np.testing.assert_allclose(whole_v, ref_v, atol=1e-6)
    np.testing.assert_array_equal(chunk_i, ref_i)  # random data: no near-ties
    np.testing.assert_array_equal(whole_i, ref_i)


def test_zero_row_raises_naming_the_row():
    a = np.ones((4, 3), dtype=np.float32)
    a[2] = 0
    with pytest.raises(DataError, match="row 2 of a has zero norm"):
        max_cosine_similarity(a, np.ones((2, 3)))
    with pytest.raises(DataError, match="row 2 of b has zero norm"):
        max_cosine_similarity(np.ones((2, 3)), a)


def test_width_mismatch_raises_naming_both_widths():
    with pytest.raises(DataError, match="a has width 128 but b has width 64"):
        max_cosine_similarity(np.ones((2, 128)), np.ones((3, 64)))
    with pytest.raises(DataError, match="a has width 5 but b has width 6"):
        hungarian_match(np.ones((2, 5)), np.ones((2, 6)))


# ------------------------------------------------------------------------------------------------------- analytic null
def test_analytic_pdf_integrates_to_one_and_cdf_hits_its_ends():
    x = np.linspace(-1, 1, 200_001)
    for K, M in [(16, 32), (128, 1024), (4, 1)]:
        assert np.trapezoid(analytic_null_pdf(x, K, M), x) == pytest.approx(1.0, abs=1e-6)
        cdf = analytic_null_cdf(np.array([-1.0, 1.0]), K, M)
        assert cdf[0] == 0.0 and cdf[1] == pytest.approx(1.0, abs=1e-12)
    # The cdf is the running integral of the pdf.
    grid = np.linspace(-1, 1, 20_001)
    pdf = analytic_null_pdf(grid, 16, 32)
    running = np.concatenate([[0.0], np.cumsum(np.diff(grid) * (pdf[1:] + pdf[:-1]) / 2)])  # trapezoid rule
    np.testing.assert_allclose(running, analytic_null_cdf(grid, 16, 32), atol=1e-5)


def test_analytic_null_matches_monte_carlo_maxima():
    K, M, n = 16, 32, 100_000
    s = (K - 1) / 2
    cosines = 2 * np.random.default_rng(6).beta(s, s, size=(n, M)) - 1  # the exact single-cosine law
    maxima = cosines.max(axis=1)
    assert scipy.stats.kstest(maxima, lambda x: analytic_null_cdf(x, K, M)).pvalue > 0.01
    # ... and the single-cosine law itself matches real random vectors.
    u, v = random_dictionary(20_000, K, seed=7), random_dictionary(20_000, K, seed=8)
    real = np.sum(u * v, axis=1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    assert scipy.stats.kstest(real, lambda x: analytic_null_cdf(x, K, 1)).pvalue > 0.01
    # A wrong dimension is rejected.
    assert scipy.stats.kstest(maxima, lambda x: analytic_null_cdf(x, K + 4, M)).pvalue < 1e-6


def test_analytic_null_mean_at_k128():
    assert round(analytic_null_mean(128, 1024), 3) == 0.283
    assert round(analytic_null_mean(128, 8192), 3) == 0.328
    assert analytic_null_mean(128, 1) == pytest.approx(0.0, abs=1e-9)  # one cosine is symmetric about 0


def test_quantile_inverts_cdf():
    for K, M in [(16, 32), (128, 1024), (128, 8192)]:
        for q in [1e-6, 0.05, 0.5, 0.95, 1 - 1e-9]:
            assert analytic_null_cdf(analytic_null_quantile(q, K, M), K, M) == pytest.approx(q, rel=1e-7)
    assert analytic_null_quantile(0.0, 16, 32) == -1.0
    assert analytic_null_quantile(1.0, 16, 32) == 1.0


def test_sampled_null_mean_matches_analytic_mean():
    values = sampled_null(2000, 1024, 128, seed=0)
    assert values.shape == (2000,)
    assert abs(values.mean() - analytic_null_mean(128, 1024)) < 0.005
    np.testing.assert_array_equal(values, sampled_null(2000, 1024, 128, seed=0))  # reproducible


def test_random_dictionary_is_seeded_standard_normal():
    d = random_dictionary(1000, 64, seed=9)
    assert d.shape == (1000, 64) and d.dtype == np.float32
    np.testing.assert_array_equal(d, random_dictionary(1000, 64, seed=9))
    assert abs(d.mean()) < 0.01 and abs(d.std() - 1) < 0.01


# ---------------------------------------------------------------------------------------------------------------- EMD
def test_emd_hand_cases():
    x = np.random.default_rng(10).standard_normal(100)
    assert emd(x, x) == 0.0
    assert emd([0, 1], [1, 2]) == 1.0
    assert emd([0, 3], [2, 1]) == 1.0  # sorted: |0-1| + |3-2| over 2


def test_emd_fast_path_equals_scipy():
    rng = np.random.default_rng(11)
    for _ in range(5):
        u, v = rng.standard_normal(1000), rng.exponential(size=1000)
        assert emd(u, v) == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-9)


def test_emd_unequal_sizes_use_scipy():
    rng = np.random.default_rng(12)
    u, v = rng.standard_normal(300), rng.standard_normal(170) + 0.5
    assert emd(u, v) == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-12)
    assert emd([0.0], [1.0, 3.0]) == 2.0  # mass 1/2 moves 1, mass 1/2 moves 3


def test_emd_matrix_is_symmetric_and_matches_pairwise():
    rng = np.random.default_rng(13)
    samples = {"a": rng.standard_normal(200), "b": rng.standard_normal(200) + 1, "c": rng.uniform(size=150)}
    names, dist = emd_matrix(samples)
    assert names == ["a", "b", "c"]
    np.testing.assert_array_equal(dist, dist.T)
    np.testing.assert_array_equal(np.diag(dist), 0.0)
    for i, j in itertools.combinations(range(3), 2):
        assert dist[i, j] == pytest.approx(emd(samples[names[i]], samples[names[j]]), rel=1e-12)
        assert dist[i, j] > 0


# ----------------------------------------------------------------------------------------------------------- matching
def test_hungarian_equals_brute_force_on_6x6():
    a, b = random_dictionary(6, 5, seed=14), random_dictionary(6, 5, seed=15)
    rows, cols, sims = hungarian_match(a, b)
    sim = unit(a) @ unit(b).T
    best = max(sum(sim[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6)))
    assert sims.sum() == pytest.approx(best, rel=1e-12)
    np.testing.assert_allclose(sims, sim[rows, cols], atol=1e-12)
    assert sorted(cols) == list(range(6))


def test_hungarian_recovers_a_permutation_of_identical_dictionaries():
    a = random_dictionary(30, 8, seed=16)
    perm = np.random.default_rng(17).permutation(30)
    rows, cols, sims = hungarian_match(a, a[perm])
    np.testing.assert_array_equal(rows, np.arange(30))
    np.testing.assert_array_equal(perm[cols], rows)
    np.testing.assert_allclose(sims, 1.0, atol=1e-12)


# ----------------------------------------------------------------------------------------- analytic null: log and draws
@pytest.mark.parametrize("K, M", [(16, 32), (128, 8192)])
def test_sample_analytic_null_follows_the_analytic_cdf_and_mean(K, M):
    draws = sample_analytic_null(20_000, K, M, seed=20)
    assert draws.shape == (20_000,) and draws.dtype == np.float64
    assert scipy.stats.kstest(draws, lambda x: analytic_null_cdf(x, K, M)).pvalue > 0.01
    assert scipy.stats.kstest(draws, lambda x: analytic_null_cdf(x, K, 2 * M)).pvalue < 1e-6  # a wrong M is rejected
    assert abs(draws.mean() - analytic_null_mean(K, M)) < 4 * draws.std() / np.sqrt(draws.size)
    np.testing.assert_array_equal(draws, sample_analytic_null(20_000, K, M, seed=20))
    assert sample_analytic_null(0, K, M, seed=0).shape == (0,)


def test_analytic_null_logpdf_is_the_log_of_the_pdf_and_finite_where_it_underflows():
    x = np.linspace(-0.99, 0.99, 199)
    for K, M in [(16, 32), (128, 1024), (4, 1)]:
        pdf = analytic_null_pdf(x, K, M)
        positive = pdf > 1e-300
        np.testing.assert_allclose(analytic_null_logpdf(x, K, M)[positive], np.log(pdf[positive]), rtol=1e-10)
    assert analytic_null_pdf(-0.5, 128, 8192) == 0.0  # underflows...
    assert -np.inf < analytic_null_logpdf(-0.5, 128, 8192) < -1000  # ... but its log does not
    assert analytic_null_logpdf(1.0, 128, 8192) == -np.inf


# ------------------------------------------------------------------------------------------------------ row-wise cosine
def test_rowwise_cosine_hand_cases():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    b = np.array([[2.0, 0.0], [1.0, 1.0], [-3.0, -4.0]])
    np.testing.assert_allclose(rowwise_cosine(a, b), [1.0, 1 / np.sqrt(2), -1.0], atol=1e-15)
    got = rowwise_cosine(torch.tensor(a, dtype=torch.float32), b.astype(np.float16))  # torch and numpy mixed
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, [1.0, 1 / np.sqrt(2), -1.0], atol=1e-7)


def test_rowwise_cosine_names_the_zero_row_and_shape_mismatch():
    a = np.ones((4, 3))
    z = a.copy()
    z[[1, 3]] = 0
    with pytest.raises(DataError, match=r"row 1 of b has zero norm \(2 zero rows in all\)"):
        rowwise_cosine(a, z)
    with pytest.raises(DataError, match="row 1 of a has zero norm"):
        rowwise_cosine(z, a)
    with pytest.raises(DataError, match=r"a has shape \(4, 3\) but b has shape \(3, 3\)"):
        rowwise_cosine(a, a[:3])


# ---------------------------------------------------------------------------------------- anisotropic random baselines
def test_gaussian_dictionary_has_the_covariance_even_when_singular():
    rotation, _ = np.linalg.qr(np.random.default_rng(21).standard_normal((3, 3)))
    cov = rotation @ np.diag([4.0, 1.0, 0.0]) @ rotation.T  # rank 2: Cholesky would fail
    d = gaussian_dictionary(200_000, cov, seed=22)
    assert d.shape == (200_000, 3) and d.dtype == np.float32
    np.testing.assert_allclose(np.cov(d.T), cov, atol=0.05)
    assert np.abs(d @ rotation[:, 2]).max() < 1e-5  # nothing along the zero-variance direction
    np.testing.assert_array_equal(d[:100], gaussian_dictionary(100, cov, seed=22)[:100])  # seeded, row by row


def test_gaussian_dictionary_rejects_bad_covariances():
    with pytest.raises(DataError, match=r"square \(K, K\) matrix, got shape \(2, 3\)"):
        gaussian_dictionary(5, np.ones((2, 3)), seed=0)
    with pytest.raises(DataError, match="not symmetric"):
        gaussian_dictionary(5, np.array([[1.0, 0.5], [0.0, 1.0]]), seed=0)
    with pytest.raises(DataError, match="eigenvalue -1 < 0"):
        gaussian_dictionary(5, np.diag([1.0, -1.0]), seed=0)
    with pytest.raises(DataError, match="1 non-finite"):
        gaussian_dictionary(5, np.array([[1.0, 0.0], [0.0, np.nan]]), seed=0)
    with pytest.raises(DataError, match="all zeros"):
        gaussian_dictionary(5, np.zeros((2, 2)), seed=0)
    # Rounding-sized negative eigenvalues of a singular covariance are clipped, not rejected.
    v = np.array([1.0, 2.0, 3.0])
    assert gaussian_dictionary(5, np.outer(v, v) - 1e-12 * np.eye(3), seed=0).shape == (5, 3)


def float16_acts(tmp_path, n_rows: int, zero_rows) -> np.ndarray:
    """A float16 memmap whose row i is (i, 1, -i) (exact in float16), with the given rows set to zero."""
    acts = np.lib.format.open_memmap(tmp_path / "acts.npy", mode="w+", dtype=np.float16, shape=(n_rows, 3))
    i = np.arange(n_rows, dtype=np.float16)
    acts[:] = np.stack([i, np.ones_like(i), -i], axis=1)
    acts[zero_rows] = 0
    acts.flush()
    return np.load(tmp_path / "acts.npy", mmap_mode="r")


def test_activation_dictionary_draws_distinct_nonzero_rows(tmp_path):
    acts = float16_acts(tmp_path, 100, zero_rows=slice(10, 60))  # half the rows are zero
    d = activation_dictionary(acts, 30, seed=23)
    assert d.shape == (30, 3) and d.dtype == np.float32
    rows = d[:, 0].astype(int)
    assert len(set(rows)) == 30 and not any(10 <= r < 60 for r in rows)
    np.testing.assert_array_equal(d, acts[rows].astype(np.float32))  # real rows of acts
    np.testing.assert_array_equal(d, activation_dictionary(acts, 30, seed=23))
    # Asking for every nonzero row must find them all, however many zero rows are drawn on the way.
    everything = activation_dictionary(acts, 50, seed=24)
    assert sorted(everything[:, 0].astype(int)) == [*range(10), *range(60, 100)]
    with pytest.raises(DataError, match="only 50 rows of nonzero norm \\(of 100\\)"):
        activation_dictionary(acts, 51, seed=0)
    with pytest.raises(DataError, match="only 100 rows"):
        activation_dictionary(acts, 101, seed=0)
    with pytest.raises(ConfigError, match="positive"):
        activation_dictionary(acts, 0, seed=0)


def test_activation_dictionary_is_uniform_over_nonzero_rows(tmp_path):
    acts = float16_acts(tmp_path, 40, zero_rows=[0, 5, 6, 7, 8, 9, 30, 39])  # 32 nonzero rows
    counts = np.zeros(40)
    for seed in range(2000):
        counts[activation_dictionary(acts, 4, seed=seed)[:, 0].astype(int)] += 1
    assert counts[[0, 5, 6, 7, 8, 9, 30, 39]].sum() == 0
    nonzero = np.delete(counts, [0, 5, 6, 7, 8, 9, 30, 39])  # expected 2000 * 4 / 32 = 250 each
    assert scipy.stats.chisquare(nonzero).pvalue > 0.001


def test_activation_dictionary_rejects_corrupt_rows():
    acts = np.ones((5, 2), dtype=np.float32)
    acts[3, 1] = np.nan
    with pytest.raises(DataError, match="row 3 of acts is not finite"):
        activation_dictionary(acts, 5, seed=0)
    with pytest.raises(DataError, match="2-D"):
        activation_dictionary(np.ones(5), 1, seed=0)


@pytest.mark.parametrize("chunk", [1, 10, 103, 10_000])  # one row at a time, ragged chunks, exact fit, one chunk
def test_activation_covariance_equals_numpy(chunk):
    rng = np.random.default_rng(25)
    acts = (rng.standard_normal((103, 4)) @ rng.standard_normal((4, 4)) + 1e4).astype(np.float32)  # large mean
    mean, cov = activation_covariance(acts, chunk=chunk)
    assert mean.dtype == cov.dtype == np.float64 and cov.shape == (4, 4)
    np.testing.assert_allclose(mean, acts.astype(np.float64).mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(cov, np.cov(acts.astype(np.float64).T), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(cov, cov.T)


def test_activation_covariance_of_a_float16_memmap(tmp_path):
    acts = float16_acts(tmp_path, 50, zero_rows=[])
    mean, cov = activation_covariance(acts, chunk=7)
    np.testing.assert_allclose(mean, [24.5, 1.0, -24.5], rtol=1e-15)
    var = np.var(np.arange(50), ddof=1)  # columns i, 1, -i
    np.testing.assert_allclose(cov, [[var, 0, -var], [0, 0, 0], [-var, 0, var]], rtol=1e-12, atol=1e-12)


def test_activation_covariance_rejects_bad_input():
    with pytest.raises(DataError, match="at least 2"):
        activation_covariance(np.ones((1, 3)))
    with pytest.raises(DataError, match="non-finite"):
        activation_covariance(np.array([[1.0, np.inf], [2.0, 3.0]]))
    with pytest.raises(ConfigError, match="chunk"):
        activation_covariance(np.ones((4, 3)), chunk=0)
