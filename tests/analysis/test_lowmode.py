"""The learned-reference null, duplicates of best matches, PW-MCC, the figures' null scaling and the cutoff default:
hand-made geometry where the right answer is known."""

import numpy as np
import pytest
import torch

from sae_sweep.analysis.measures.features import duplicates
from sae_sweep.analysis.measures.inference import emd_permutation_test
from sae_sweep.analysis.measures.low_mode import learned_reference_null, low_mode_tests
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.analysis.measures.nulls import analytic_null_cdf, random_dictionary, sampled_null, second_moment
from sae_sweep.analysis.measures.pairwise import Results
from sae_sweep.analysis.report.reproduction_figures import null_counts
from sae_sweep.analysis.settings import AnalysisConfig

K = 16


def clustered(n: int, centres: int, spread: float, seed: int) -> np.ndarray:
    """n unit rows bunched around ``centres`` random directions: a reference that covers the sphere unevenly."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, K))
    rows = c[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, K))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_clustered_reference_explains_the_difference_from_the_isotropic_null():
    """Random "learned" features scored against a clustered reference differ from the isotropic null (the clusters
    leave gaps, so MCS is lower), but not from random vectors scored against that same reference."""
    cfg = AnalysisConfig()
    reference = clustered(512, centres=8, spread=0.3, seed=0)
    features = random_dictionary(1024, K, seed=1)
    learned = max_cosine_similarity(features, reference)[0]
    isotropic = sampled_null(1024, 512, K, seed=2)
    against_ref = learned_reference_null(1024, reference, cfg, seed=3)
    assert emd_permutation_test(learned, isotropic, 500, seed=4)[1] < 0.01
    assert emd_permutation_test(learned, against_ref, 500, seed=5)[1] > 0.05


class Decoder:
    """The one thing low_mode_tests reads of a dictionary: its decoder (d_in, J)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.decoder = torch.tensor(rows.T, dtype=torch.float32)


def test_low_mode_tests_rows_for_each_size_seed_and_null():
    cfg = AnalysisConfig(n_perm=50, cutoff=0.9)
    res = Results(cfg, K, [64, 512], [0], 512, 64)
    reference = clustered(512, centres=8, spread=0.3, seed=0)
    learned = max_cosine_similarity(random_dictionary(64, K, 1), reference)[0]
    res.mcs[(64, 0, 512, 0)] = (learned, None)
    res.random[64] = [sampled_null(64, 512, K, seed=2)]
    rows = low_mode_tests(res, {(512, 0): Decoder(reference)}, cfg)
    assert [(r["dict_size"], r["seed"], r["null"]) for r in rows] == [
        (64, 0, "isotropic"),
        (64, 0, "learned_reference"),
    ]
    assert all(0 < r["p"] <= 1 and r["n_learned"] == np.count_nonzero(learned < 0.9) for r in rows)


def test_duplicates_counts_shared_best_matches():
    best = np.array([3, 3, 7, 1, 1, 1, 9, 5])
    high = np.array([True, True, True, True, True, False, False, True])
    assert duplicates(best, high) == (4, 4)  # atoms {3, 7, 1, 5}; features 0, 1 share 3 and 3, 4 share 1
    assert duplicates(best, np.zeros(8, dtype=bool)) == (0, 0)
    assert duplicates(np.arange(8), np.ones(8, dtype=bool)) == (8, 0)  # all distinct: Hungarian would equal max


def test_null_curve_is_scaled_to_the_low_part_it_overlays():
    K_, M, cut, width, n_low = 128, 8192, 0.5, 0.01, 587
    x = np.arange(-1.0, cut, width) + width / 2  # bin centres below the cutoff
    counts = null_counts(x, K_, M, n_low, cut, width)
    assert counts.sum() == pytest.approx(n_low / analytic_null_cdf(cut, K_, M), rel=1e-3)
    assert counts.sum() == pytest.approx(n_low, rel=1e-3)  # the null's mass below 0.5 is ~1 at K=128, M=8192


def test_second_moment_is_the_mean_outer_product_of_the_rows():
    rows = np.random.default_rng(0).normal(2.0, 1.0, size=(500, 4))
    mean, cov = rows.mean(axis=0), np.cov(rows, rowvar=False)
    np.testing.assert_allclose(second_moment(mean, cov, 500), rows.T @ rows / 500, rtol=1e-10)


def test_cutoff_follows_the_threshold_unless_set():
    assert AnalysisConfig(threshold=0.7).cutoff == 0.7
    assert AnalysisConfig(threshold=0.7, cutoff=0.5).cutoff == 0.5
    assert AnalysisConfig().cutoff == AnalysisConfig().threshold == 0.5


def test_a_cutoff_below_every_mcs_draws_a_panel_that_says_so_instead_of_failing(tmp_path):
    """analysis.cutoff=0.01 (or a threshold it follows): no MCS lies below it, so figure 4 has no bin to draw."""
    from types import SimpleNamespace  # noqa: PLC0415

    from sae_sweep.analysis.report.reproduction_figures import fig_low_vs_random  # noqa: PLC0415

    learned, rand = np.array([0.31, 0.6, 0.9]), np.array([0.12, 0.2])
    res = SimpleNamespace(config=AnalysisConfig(cutoff=0.01), featured=16, reference=32, random={16: [rand]},
                          vs_reference=lambda j, seed: learned)  # fmt: skip
    path = fig_low_vs_random(res, 0, tmp_path / "fig04.png")
    assert path.is_file() and path.stat().st_size > 0
