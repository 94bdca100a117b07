"""Random baselines for MCS: the exact analytic null of footnote 2, sampled isotropic nulls, anisotropic nulls.

* Two independent Gaussian vectors in ``K`` dims have one cosine ``c`` with ``(c + 1) / 2 ~ Beta((K - 1) / 2,
  (K - 1) / 2)``; the max over ``M`` independent cosines has CDF ``F(x) ** M`` and density ``M f(x) F(x) ** (M - 1)``.
  The ``M`` cosines of one row of ``a`` against ``M`` rows of ``b`` are independent exactly (each depends only on its
  own row of ``b`` once the ``a`` row is fixed), so the analytic null is the exact law of one MCS value of random
  dictionaries; different rows of ``a`` share ``b`` and are only weakly dependent.
* ``sampled_null``: MCS of one i.i.d. N(0, 1) dictionary against another (the note's Rand 1..4).
* Harder, anisotropic baselines: ``gaussian_dictionary`` (rows ~ N(0, cov), e.g. cov = ``activation_covariance``
  or the uncentred ``second_moment``)
  and ``activation_dictionary`` (rows drawn from the activations themselves): they ask whether SAE features are more
  alike than vectors that merely share the activations' dominant directions.

Bad parameters (K, M, q, n, chunk) raise ConfigError; bad arrays (a covariance that is not one) raise DataError.
"""

from __future__ import annotations

import numpy as np
import scipy.integrate
import scipy.stats
import torch

from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.errors import ConfigError, DataError


def _beta_shape(K: int) -> float:
    if K < 2:
        raise ConfigError(f"K must be at least 2, got {K}")
    return (K - 1) / 2


def _check_m(M: int) -> None:
    if M < 1:
        raise ConfigError(f"M must be at least 1, got {M}")


def _log_single_cdf(x: np.ndarray, K: int) -> np.ndarray:
    """log P(c <= x) for one cosine of two random Gaussian vectors in K dims."""
    s = _beta_shape(K)
    with np.errstate(divide="ignore"):
        return scipy.stats.beta.logcdf((x + 1) / 2, s, s)


def analytic_null_cdf(x: np.ndarray | float, K: int, M: int) -> np.ndarray:
    """P(max of M independent random cosines in K dims <= x), vectorised over x; F^M as exp(M log F)."""
    _check_m(M)
    x = np.asarray(x, dtype=np.float64)
    return np.exp(M * _log_single_cdf(x, K))


def analytic_null_pdf(x: np.ndarray | float, K: int, M: int) -> np.ndarray:
    """Density of the max of M independent random cosines in K dims: M f F^(M-1), evaluated in log space."""
    _check_m(M)
    s = _beta_shape(K)
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_f = scipy.stats.beta.logpdf((x + 1) / 2, s, s) - np.log(2)  # dc = 2 du for u = (c + 1) / 2
        tail = (M - 1) * _log_single_cdf(x, K) if M > 1 else 0.0  # avoid 0 * -inf at x = -1
        return np.exp(np.log(M) + log_f + tail)


def analytic_null_quantile(q: float, K: int, M: int) -> float:
    """The x with analytic_null_cdf(x, K, M) = q: the single-cosine quantile at q^(1/M), mapped back to [-1, 1]."""
    _check_m(M)
    if not 0 <= q <= 1:
        raise ConfigError(f"q must lie in [0, 1], got {q}")
    s = _beta_shape(K)
    if q == 0:
        return -1.0
    # q^(1/M) is close to 1 for large M: take the upper tail 1 - q^(1/M) = -expm1(log(q) / M) to keep its digits.
    upper = -np.expm1(np.log(q) / M)
    return float(2 * scipy.stats.beta.isf(upper, s, s) - 1)


def analytic_null_mean(K: int, M: int) -> float:
    """E[max of M random cosines in K dims] = 1 - integral_{-1}^{1} F(x)^M dx (error well below 1e-4).

    F^M is a steep step, so quad is told where it rises (its quantiles) instead of hunting for it.
    """
    _check_m(M)
    points = sorted({analytic_null_quantile(q, K, M) for q in (1e-9, 1e-4, 0.01, 0.1, 0.5, 0.9, 0.99, 1 - 1e-6)})
    integral, _ = scipy.integrate.quad(
        lambda x: float(analytic_null_cdf(x, K, M)), -1.0, 1.0, points=points, limit=500, epsabs=1e-10, epsrel=1e-10
    )
    return 1.0 - integral


def analytic_null_logpdf(x: np.ndarray | float, K: int, M: int) -> np.ndarray:
    """log of analytic_null_pdf, finite far into the tails where the density itself underflows to 0 (-inf outside)."""
    _check_m(M)
    s = _beta_shape(K)
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_f = scipy.stats.beta.logpdf((x + 1) / 2, s, s) - np.log(2)
        tail = (M - 1) * _log_single_cdf(x, K) if M > 1 else 0.0
    return np.log(M) + log_f + tail


def sample_analytic_null(n: int, K: int, M: int, seed: int) -> np.ndarray:
    """``n`` exact draws, float64 (n,), of the analytic null: the max of ``M`` random cosines in ``K`` dims.

    Inverse CDF: the max is the single-cosine quantile at ``U ** (1 / M)`` for U uniform. For M in the thousands that
    level is within ~1/M of 1, so it is passed as its upper tail ``1 - U ** (1 / M) = -expm1(log(U) / M)`` to
    ``beta.isf``, which keeps the digits that ``beta.ppf(U ** (1 / M))`` would round away.
    """
    _check_m(M)
    s = _beta_shape(K)
    if n < 0:
        raise ConfigError(f"n must be non-negative, got {n}")
    u = 1.0 - np.random.default_rng(seed).random(n)  # uniform on (0, 1]: log(u) is finite
    upper = -np.expm1(np.log(u) / M)  # (n,) P(one cosine > quantile)
    return 2 * scipy.stats.beta.isf(upper, s, s) - 1


def random_dictionary(n: int, K: int, seed: int | np.random.SeedSequence) -> np.ndarray:
    """An (n, K) float32 dictionary with i.i.d. N(0, 1) entries (rows are features)."""
    return np.random.default_rng(seed).standard_normal((n, K), dtype=np.float32)


def sampled_null(n_a: int, n_b: int, K: int, seed: int) -> np.ndarray:
    """MCS values (n_a,) of a random (n_a, K) dictionary against an independent random (n_b, K) one."""
    seed_a, seed_b = np.random.SeedSequence(seed).spawn(2)  # two independent streams from one seed
    values, _ = max_cosine_similarity(random_dictionary(n_a, K, seed_a), random_dictionary(n_b, K, seed_b))
    return values


_NEGATIVE_EIGENVALUE_TOL = 1e-6  # relative to the largest |eigenvalue|: below this it is rounding, above it an error


def _covariance_factor(cov: np.ndarray) -> np.ndarray:
    """A (K, K) L with L @ L.T = cov, for a symmetric positive semi-definite cov; singular cov is fine.

    Uses the eigendecomposition (Cholesky fails on singular matrices) and clips rounding-sized negative eigenvalues.
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise DataError(f"cov must be a square (K, K) matrix, got shape {cov.shape}")
    bad = np.count_nonzero(~np.isfinite(cov))
    if bad:
        raise DataError(f"cov has {bad} non-finite entries (NaN or inf); recompute it from finite activations")
    scale = float(np.abs(cov).max())
    if scale == 0:
        raise DataError("cov is all zeros: every row would be the zero vector, whose cosine is undefined")
    asym = float(np.abs(cov - cov.T).max())
    if asym > 1e-8 * scale:
        raise DataError(
            f"cov is not symmetric: max |cov - cov.T| = {asym:.3g} against entries up to {scale:.3g}; "
            "pass a covariance matrix (or (cov + cov.T) / 2 if the asymmetry is rounding)"
        )
    # torch's eigh, not numpy's: once torch is loaded, numpy's (OpenBLAS) threads contend with torch's and a
    # 128 x 128 decomposition took 50 ms instead of 3 (the verdicts draw 24 such dictionaries)
    eig, vec = (t.numpy() for t in torch.linalg.eigh(torch.from_numpy((cov + cov.T) / 2)))
    if eig[0] < -_NEGATIVE_EIGENVALUE_TOL * np.abs(eig).max():
        raise DataError(
            f"cov has eigenvalue {eig[0]:.3g} < 0 (largest {eig[-1]:.3g}): a covariance matrix must be positive "
            "semi-definite"
        )
    return vec * np.sqrt(np.clip(eig, 0.0, None))  # (K, K): column j scaled by sqrt(eigenvalue j)


def gaussian_dictionary(n: int, cov: np.ndarray, seed: int | np.random.SeedSequence) -> np.ndarray:
    """An (n, K) float32 dictionary with rows i.i.d. N(0, cov): an anisotropic random baseline.

    ``cov`` must be symmetric positive semi-definite and may be singular (rank-deficient activations); anything else
    raises DataError naming the problem.
    """
    factor = _covariance_factor(cov)  # (K, K)
    z = np.random.default_rng(seed).standard_normal((n, factor.shape[0]))  # (n, K) float64
    return (z @ factor.T).astype(np.float32)


def _check_activations(acts: np.ndarray) -> tuple[int, int]:
    if getattr(acts, "ndim", None) != 2:
        raise DataError(f"acts must be a 2-D (N, d) array of activation rows, got shape {getattr(acts, 'shape', None)}")
    return acts.shape[0], acts.shape[1]


def _read_rows(acts: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of ``acts`` as float32 (len(index), d), in the order given.

    The rows are gathered in sorted order (sequential reads from a memmap) and converted in one go.
    """
    order = np.argsort(index, kind="stable")
    gathered = np.asarray(acts[index[order]], dtype=np.float32)  # (k, d) in file order
    rows = np.empty_like(gathered)
    rows[order] = gathered
    return rows


def activation_dictionary(acts: np.ndarray, n: int, seed: int | np.random.SeedSequence) -> np.ndarray:
    """``n`` distinct rows of ``acts`` (N, d), uniform without replacement among its nonzero rows: (n, d) float32.

    ``acts`` may be a float16 memmap; only the drawn rows are read. Zero rows (cosine undefined) are skipped and
    replaced by fresh draws, so the result is a uniform sample of the nonzero rows. "Distinct" means distinct row
    indices: two tokens with identical activations can both be drawn. Fewer than ``n`` nonzero rows raises DataError
    with their count; a non-finite row raises DataError (a corrupt cache).
    """
    n_rows, _ = _check_activations(acts)
    if n < 1:
        raise ConfigError(f"n must be a positive number of rows, got {n}")
    if n_rows < n:
        raise DataError(f"acts has only {n_rows} rows, fewer than the n={n} requested: ask for fewer or harvest more")
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    n_kept, n_nonzero = 0, 0
    drawn = np.empty(0, dtype=np.int64)  # every row index read so far, zero or not
    while n_kept < n:
        need = n - n_kept
        remaining = n_rows - drawn.size
        if remaining == 0:
            raise DataError(
                f"acts has only {n_nonzero} rows of nonzero norm (of {n_rows}), fewer than the n={n} requested: "
                "ask for fewer or harvest more"
            )
        # Over-draw by the nonzero rate seen so far, so that a few rounds suffice even when most rows are zero.
        rate = n_nonzero / drawn.size if drawn.size else 1.0
        want = int(np.ceil(1.2 * need / rate)) if rate > 0 else 2 * drawn.size
        k = min(remaining, max(need, min(want, 262_144)))
        pool = np.setdiff1d(np.arange(n_rows), drawn, assume_unique=True) if drawn.size else n_rows
        index = np.asarray(rng.choice(pool, size=k, replace=False), dtype=np.int64)  # (k,) random order
        rows = _read_rows(acts, index)  # (k, d)
        norms = np.linalg.norm(rows, axis=1)  # (k,)
        if not np.isfinite(norms).all():
            bad = int(index[~np.isfinite(norms)][0])
            raise DataError(f"row {bad} of acts is not finite (NaN or inf): the activation cache is corrupt")
        nonzero = norms > 0
        n_nonzero += int(nonzero.sum())
        kept.append(rows[nonzero][:need])  # the first nonzero rows in draw order: still a uniform sample
        n_kept += kept[-1].shape[0]
        drawn = np.concatenate([drawn, index])
    return np.concatenate(kept)


def activation_covariance(acts: np.ndarray, chunk: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of the rows of ``acts`` (N, d), float64, streaming ``chunk`` rows at a time.

    Each chunk is converted to float64 in one go (``chunk x d x 8`` bytes: 256 MiB at d = 128) and centred on the
    first chunk's mean before its cross products are summed, which avoids the cancellation of E[x x^T] - E[x] E[x]^T
    when the mean is large. The covariance has the N - 1 denominator, like np.cov.
    """
    n_rows, d = _check_activations(acts)
    if chunk < 1:
        raise ConfigError(f"chunk must be a positive number of rows, got {chunk}")
    if n_rows < 2:
        raise DataError(f"acts has {n_rows} rows; a covariance needs at least 2")
    shift: np.ndarray | None = None
    total = np.zeros(d)  # sum of (x - shift), (d,)
    cross = np.zeros((d, d))  # sum of (x - shift)(x - shift)^T, (d, d)
    with np.errstate(invalid="ignore", over="ignore"):  # a NaN or inf anywhere is caught once, after the loop
        for start in range(0, n_rows, chunk):
            x = np.asarray(acts[start : start + chunk], dtype=np.float64)  # (m, d)
            if shift is None:
                shift = x.mean(axis=0)
            x -= shift
            total += x.sum(axis=0)
            cross += x.T @ x
    if not (np.isfinite(total).all() and np.isfinite(cross).all()):
        raise DataError("acts contains non-finite values (NaN or inf): the activation cache is corrupt")
    dev = total / n_rows  # (d,) mean - shift
    cov = (cross - n_rows * np.outer(dev, dev)) / (n_rows - 1)
    return shift + dev, (cov + cov.T) / 2


def second_moment(mean: np.ndarray, cov: np.ndarray, n_rows: int) -> np.ndarray:
    """The uncentred second moment E[x x^T] (d, d) = (n - 1) / n cov + mean mean^T, from ``activation_covariance``.

    A decoder without an input-side bias has to reconstruct the mean too, so random directions drawn from
    N(0, E[x x^T]) share what the decoder must span, where N(0, cov) leaves the mean out.
    """
    if n_rows < 2:
        raise DataError(f"a second moment from a covariance needs n_rows >= 2, got {n_rows}")
    return cov * (n_rows - 1) / n_rows + np.outer(mean, mean)
