"""The tests and intervals a Finding's words are chosen by: score intervals for proportions and their differences, a
permutation test of two MCS distributions, and an interval for a correlation.

Why these and not interval overlap
----------------------------------
Two 95% intervals that do not overlap do show a difference, but two that overlap need not mean "no difference": the
overlap rule tests at roughly the 0.5% level and misses differences a direct test finds. So every verdict here is one
statistic about the *difference* (an interval that excludes 0, or a p-value), never two intervals compared.

* ``wilson_interval``: the score interval of a binomial proportion; unlike a percentile bootstrap it does not collapse
  to a point at 0 or 1 and keeps close to its nominal coverage at small p (Brown, Cai & DasGupta 2001).
* ``score_difference``: Newcombe's hybrid score interval (his method 10, 1998) of ``a1 p1 - a2 p2`` for two
  independent proportions; ``a = 1`` compares fractions, ``a = n`` compares counts (how many high-MCS features).
* ``emd_permutation_test``: is W1 between two samples larger than relabelling the pooled values gives? Exact under
  the hypothesis that both come from one distribution, whatever that distribution is.
* ``correlation_interval``: Fisher's z interval of a Pearson correlation.
* ``bh_qvalues``: Benjamini-Hochberg adjusted p-values (q-values) of many tests at once: rejecting q <= alpha keeps
  the false discovery rate at alpha for independent or positively dependent tests (and, under the global null, the
  chance of any rejection at alpha).
* ``partial_conjunction``: Benjamini & Heller's (2008) p-value of "at least r of these n hypotheses are false" from
  the n p-values, in its Bonferroni form (n - r + 1) p_(r), valid whatever their dependence.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from sae_sweep.analysis.measures.mcs import ArrayLike
from sae_sweep.errors import ConfigError, DataError


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ConfigError(f"level must lie strictly between 0 and 1 (e.g. 0.95), got {level}")
    return float(scipy.stats.norm.ppf((1 + level) / 2))


def _check_counts(k: int, n: int) -> None:
    if n < 1 or not 0 <= k <= n:
        raise DataError(f"a proportion needs 0 <= k <= n and n >= 1, got k={k}, n={n}")


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (lo, hi) of the proportion k / n; lo = 0 exactly at k = 0 and hi = 1 at k = n."""
    _check_counts(k, n)
    z = _z(level)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return float(lo), float(hi)


def proportion_interval(mask: ArrayLike, level: float = 0.95) -> tuple[float, float, float]:
    """(fraction True, lo, hi) of a Boolean (or 0/1) array, with its Wilson interval."""
    mask = np.asarray(mask).ravel()
    if mask.size == 0:
        raise DataError("proportion_interval got an empty mask")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise DataError(f"mask must be Boolean (or 0/1), got dtype {mask.dtype} with other values")
        mask = mask.astype(bool)
    k, n = int(np.count_nonzero(mask)), mask.size
    return (k / n, *wilson_interval(k, n, level))


def score_difference(
    k1: int, n1: int, k2: int, n2: int, level: float = 0.95, counts: bool = False
) -> tuple[float, float, float]:
    """(d, lo, hi) for d = p1 - p2 of two independent proportions k1/n1, k2/n2 (Newcombe's hybrid score interval).

    With ``counts=True`` the quantity is n1 p1 - n2 p2 = k1 - k2, each side's Wilson limits scaled by its n: the
    difference of two dictionaries' numbers of high-MCS features, each count uncertain as a binomial is.
    """
    _check_counts(k1, n1)
    _check_counts(k2, n2)
    a1, a2 = (n1, n2) if counts else (1, 1)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, level)
    l2, u2 = wilson_interval(k2, n2, level)
    d = a1 * p1 - a2 * p2
    lo = d - np.hypot(a1 * (p1 - l1), a2 * (u2 - p2))
    hi = d + np.hypot(a1 * (u1 - p1), a2 * (p2 - l2))
    return float(d), float(lo), float(hi)


def _sorted_finite(x: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        raise DataError(f"{name} is empty; a two-sample test needs values on both sides")
    if not np.isfinite(x).all():
        raise DataError(f"{name} holds {np.count_nonzero(~np.isfinite(x))} non-finite values (NaN or inf)")
    return x


def emd_permutation_test(
    u: ArrayLike, v: ArrayLike, n_perm: int = 1000, seed: int = 0, block: int = 64
) -> tuple[float, float]:
    """(W1 between u and v, permutation p-value) for the hypothesis that u and v are samples of one distribution.

    The pooled values are sorted once; each permutation relabels them (n_u as "u", the rest "v"), and its W1 is the
    sum over the gaps between consecutive pooled values of |F_u - F_v|, a cumulative sum of +1/n_u and -1/n_v labels.
    p = (1 + #{permuted W1 >= observed}) / (1 + n_perm), so it is never 0. Permutations run ``block`` at a time:
    memory is (n_u + n_v) x block floats.
    """
    if n_perm < 1:
        raise ConfigError(f"n_perm must be a positive number of permutations, got {n_perm}")
    u, v = _sorted_finite(u, "u"), _sorted_finite(v, "v")
    n_u, n_v = u.size, v.size
    pooled = np.concatenate([u, v])
    order = np.argsort(pooled, kind="stable")
    gaps = np.diff(pooled[order])  # (n - 1,)
    labels = np.concatenate([np.full(n_u, 1.0 / n_u), np.full(n_v, -1.0 / n_v)])  # (n,) in pooled order

    def w1(steps: np.ndarray) -> np.ndarray:  # steps: (n, m) labels in sorted order -> (m,) W1 values
        return gaps @ np.abs(np.cumsum(steps, axis=0)[:-1])

    observed = float(w1(labels[order][:, None])[0])
    rng = np.random.default_rng(seed)
    exceed = 0
    for start in range(0, n_perm, block):
        m = min(block, n_perm - start)
        shuffled = rng.permuted(np.broadcast_to(labels, (m, labels.size)), axis=1).T  # (n, m)
        exceed += int(np.count_nonzero(w1(shuffled) >= observed * (1 - 1e-12)))
    return observed, (1 + exceed) / (1 + n_perm)


def correlation_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Fisher z interval (lo, hi) of a Pearson correlation r over n pairs (n >= 4)."""
    if n < 4:
        raise DataError(f"a correlation interval needs at least 4 pairs, got {n}")
    if not -1 <= r <= 1:
        raise DataError(f"a correlation lies in [-1, 1], got {r}")
    if abs(r) == 1:
        return float(r), float(r)
    z, half = np.arctanh(r), _z(level) / np.sqrt(n - 3)
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def bh_qvalues(p: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg q-values (n,) of p-values (n,): q_(i) = min over j >= i of n p_(j) / j, capped at 1."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or not ((p >= 0) & (p <= 1)).all():
        raise DataError("p-values must be a 1-D array of numbers in [0, 1]")
    n = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * n / np.arange(1, n + 1)  # (n,) n p_(i) / i
    q = np.minimum.accumulate(scaled[::-1])[::-1]  # the smallest over j >= i
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def partial_conjunction(p: ArrayLike, r: int) -> np.ndarray:
    """For each row of ``p`` (n_tests, n): the p-value that at least ``r`` of its n hypotheses are false,
    (n - r + 1) times its r-th smallest p, capped at 1; with r = n = 1 it is the p-value itself."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or not 1 <= r <= p.shape[1]:
        raise ConfigError(f"partial_conjunction needs (n_tests, n) p-values and 1 <= r <= n, got {p.shape}, r={r}")
    n = p.shape[1]
    return np.minimum((n - r + 1) * np.sort(p, axis=1)[:, r - 1], 1.0)
