"""How many features are real? A two-component fit of MCS values: the exact null plus a learned Beta.

MCS values are modelled as a mixture of a null component and a learned component, a Beta(a, b) on (0, 1). EM fits
the null's weight and (a, b); ``n_real = (1 - null_weight) * n``. The learned component is kept only if it beats the
null alone by BIC: a Beta can imitate the null, and without that check EM hands it 10-20% of pure-null data.

The null component is the exact analytic null (``nulls.analytic_null_pdf``, the MCS law of a random vector) moved by
``shift`` and stretched by ``scale`` about its mean, both fitted (``free_null=True``, the default), or exactly as it
is (``free_null=False``). A learned low mode is close to the exact null but not equal to it (a learned reference is
not an isotropic one), and a count that trusts the exact null puts every small misfit into the learned component:
127 planted real features among 3969 null-like ones count as 136-259 when the null is off by a shift of 0.012, a
spread 1.2x as wide or half the effective M, and pure null data shifted by 0.012 counts 500 "real" features. The
fitted shift and scale absorb such misfits (within ``SHIFT_BOUNDS`` and ``SCALE_BOUNDS``) and are reported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

from sae_sweep.analysis.measures.mcs import ArrayLike
from sae_sweep.analysis.measures.nulls import analytic_null_logpdf, analytic_null_mean, analytic_null_quantile
from sae_sweep.errors import ConfigError, DataError

_CLIP = 1e-6


_AB_BOUNDS = (1e-3, 1e7)  # Beta shapes are kept here: a learned component piled on one value has no finite MLE


_MIN_VALUES = 10
SHIFT_BOUNDS = (-0.05, 0.05)  # how far the null component may move, in MCS units
SCALE_BOUNDS = (0.7, 1.5)  # how much it may narrow or widen about its mean
_GRID = np.linspace(-1.0, 1.0, 40_001)  # where the exact null's log-density is tabulated for the free fit
_LOG_FLOOR = -1e4  # the tabulated log-density never goes below this (finite everywhere, as the E-step needs)


@dataclass(frozen=True)
class MixtureFit:
    """MCS ~ null_weight * analytic null(K, M) + (1 - null_weight) * Beta(a, b), fitted by EM to n values.

    ``n_real = (1 - null_weight) * n`` is the expected number of values from the learned component; 0 when the
    learned component did not pay for itself (null_weight = 1, a and b then describe the rejected component).
    ``converged`` is False when EM stopped at max_iter before its log-likelihood settled.
    """

    n: int
    null_weight: float
    n_real: float
    a: float
    b: float
    log_likelihood: float
    iterations: int
    K: int
    M: int
    converged: bool = True
    shift: float = 0.0  # the null component: the exact null moved by shift and stretched by scale about its mean
    scale: float = 1.0
    n_real_exact_null: float | None = None  # the count with the exact null as it is (free fits only)

    def null_logpdf(self, x: ArrayLike) -> np.ndarray:
        """log-density of the fitted null component at ``x`` (float64, x's shape)."""
        x = np.asarray(x, dtype=np.float64)
        if self.shift == 0.0 and self.scale == 1.0:
            return _null_logpdf(x, self.K, self.M)
        return _NullFamily(self.K, self.M).logpdf(x, self.shift, self.scale)

    def posterior_real(self, x: ArrayLike) -> np.ndarray:
        """P(learned component | value) for each MCS value in ``x``: float64, x's shape; 0 for values <= 0."""
        x = np.asarray(x, dtype=np.float64)
        resp, _ = _e_step(self.null_logpdf(x), _real_logpdf(x, self.a, self.b), self.null_weight)
        return resp


def _null_logpdf(x: np.ndarray, K: int, M: int) -> np.ndarray:
    # Nudged off -1, where the density is 0, so that every value keeps a finite (if hugely negative) log-density.
    return analytic_null_logpdf(np.clip(x, -1.0 + 1e-12, 1.0), K, M)


class _NullFamily:
    """The exact null moved and stretched about its mean m: log g(x) = log f(m + (x - m - shift) / scale) - log scale.

    log f is tabulated once on ``_GRID`` (spacing 5e-5, where it changes by well under 1e-3 between points) and
    interpolated, so a fit can evaluate it hundreds of times on thousands of values.
    """

    def __init__(self, K: int, M: int) -> None:
        self.mean = analytic_null_mean(K, M)
        self.log_f = np.maximum(_null_logpdf(_GRID, K, M), _LOG_FLOOR)  # (len(_GRID),) finite

    def logpdf(self, x: np.ndarray, shift: float, scale: float) -> np.ndarray:
        u = self.mean + (x - self.mean - shift) / scale
        return np.interp(u, _GRID, self.log_f, left=_LOG_FLOOR, right=_LOG_FLOOR) - np.log(scale)

    def fit(self, x: np.ndarray, weight: np.ndarray, start: tuple[float, float]) -> tuple[float, float]:
        """The (shift, scale) maximising sum(weight * log g(x)), within the bounds, from ``start``."""
        found = scipy.optimize.minimize(
            lambda p: -float(weight @ self.logpdf(x, p[0], p[1])),
            np.array(start),
            method="L-BFGS-B",
            bounds=[SHIFT_BOUNDS, SCALE_BOUNDS],
        )
        return float(found.x[0]), float(found.x[1])


def _real_logpdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    log_pdf = scipy.stats.beta.logpdf(np.clip(x, _CLIP, 1 - _CLIP), a, b)  # finite for a, b within _AB_BOUNDS
    return np.where(x > 0, log_pdf, -np.inf)


def _e_step(log_null: np.ndarray, log_real: np.ndarray, null_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(P(learned | x), log mixture density of x), each x's shape. A value neither component can produce counts null."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_joint_null = np.log(null_weight) + log_null
        log_joint_real = np.log1p(-null_weight) + log_real
        log_mix = np.logaddexp(log_joint_null, log_joint_real)
        resp = np.exp(log_joint_real - log_mix)
    return np.nan_to_num(resp, nan=0.0), log_mix


def _check_mcs(mcs: ArrayLike, K: int, M: int, max_iter: int, tol: float) -> np.ndarray:
    if K < 2 or M < 1:
        raise ConfigError(f"the null needs K >= 2 dimensions and M >= 1 candidates, got K={K}, M={M}")
    if max_iter < 1 or not tol > 0:
        raise ConfigError(f"max_iter must be positive and tol > 0, got max_iter={max_iter}, tol={tol}")
    x = np.asarray(mcs, dtype=np.float64).ravel()
    bad = np.count_nonzero(~np.isfinite(x))
    if bad:
        raise DataError(f"mcs holds {bad} non-finite values (NaN or inf); drop them (dead features?) before fitting")
    if x.size < _MIN_VALUES:
        raise DataError(f"fit_null_mixture needs at least {_MIN_VALUES} MCS values, got {x.size}")
    if np.abs(x).max() > 1 + 1e-6:
        raise DataError(f"MCS values are cosines in [-1, 1], got values in [{x.min():.3g}, {x.max():.3g}]")
    return x


def _beta_moments(x: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """Method-of-moments Beta shapes of x in (0, 1) under weights; Beta(1, 1) when the moments allow none."""
    mean = float(np.average(x, weights=weight))
    var = float(np.average((x - mean) ** 2, weights=weight))
    common = mean * (1 - mean) / var - 1 if var > 0 else -1.0
    if not common > 0:
        return 1.0, 1.0
    a, b = np.clip([mean * common, (1 - mean) * common], *_AB_BOUNDS)
    return float(a), float(b)


def _beta_mle(mean_log_x: float, mean_log_1mx: float, a: float, b: float, max_steps: int = 100) -> tuple[float, float]:
    """Beta shapes maximising (a - 1) E[log x] + (b - 1) E[log(1 - x)] - log B(a, b), from the start (a, b).

    The objective is concave in (a, b) (an exponential family in its natural parameters), so Newton steps, halved
    until the objective does not drop and clipped into _AB_BOUNDS, converge from any start.
    """

    def objective(p: np.ndarray) -> float:
        return (p[0] - 1) * mean_log_x + (p[1] - 1) * mean_log_1mx - scipy.special.betaln(p[0], p[1])

    p = np.array([a, b], dtype=np.float64)
    value = objective(p)
    for _ in range(max_steps):
        grad = np.array([mean_log_x, mean_log_1mx]) - scipy.special.digamma(p) + scipy.special.digamma(p.sum())
        neg_hess = np.diag(scipy.special.polygamma(1, p)) - scipy.special.polygamma(1, p.sum())  # positive definite
        step = np.linalg.solve(neg_hess, grad)
        scale = 1.0
        trial = np.clip(p + step, *_AB_BOUNDS)
        while (trial_value := objective(trial)) < value and scale > 1e-12:
            scale /= 2
            trial = np.clip(p + scale * step, *_AB_BOUNDS)
        if trial_value < value:  # no step improves: at the optimum up to rounding
            break
        done = bool(np.all(np.abs(trial - p) <= 1e-10 * p))
        p, value = trial, trial_value
        if done:
            break
    return float(p[0]), float(p[1])


def fit_null_mixture(
    mcs: ArrayLike, K: int, M: int, max_iter: int = 500, tol: float = 1e-8, free_null: bool = True
) -> MixtureFit:
    """Fit MCS values as a null component for (K, M) mixed with one learned Beta(a, b) component, by EM.

    ``K`` is the feature width and ``M`` the size of the dictionary the MCS was taken against. EM fits the weight,
    (a, b) (a weighted Beta MLE by Newton's method) and, with ``free_null``, the null's shift and scale; it stops
    when the log-likelihood changes by less than ``tol * (1 + |log-likelihood|)``. The learned component is then
    kept only if it beats the null alone (with its own fitted shift and scale) by BIC; otherwise null_weight = 1.
    A free fit also reports the exact null's count (``n_real_exact_null``), the sensitivity to the null's shape.
    Fewer than 10 values, NaN or values outside [-1, 1] raise DataError.
    """
    x = _check_mcs(mcs, K, M, max_iter, tol)
    exact = _em(x, K, M, max_iter, tol, None)
    if not free_null:
        return exact
    free = _em(x, K, M, max_iter, tol, _NullFamily(K, M))
    return dataclasses.replace(free, n_real_exact_null=exact.n_real)


def _em(x: np.ndarray, K: int, M: int, max_iter: int, tol: float, family: _NullFamily | None) -> MixtureFit:
    """One EM fit; ``family`` None: the exact null, else its shift and scale are fitted in every M-step."""
    n = x.size
    xc = np.clip(x, _CLIP, 1 - _CLIP)  # (n,) where the Beta is evaluated
    log_x, log_1mx = np.log(xc), np.log1p(-xc)
    shift, scale = 0.0, 1.0
    log_null = _null_logpdf(x, K, M) if family is None else family.logpdf(x, shift, scale)  # (n,)
    # Start: the learned component holds every value above the null's 99.9% quantile and a tenth of each other
    # positive value, so that it starts spread over the data and EM can move it to wherever the null fits worst.
    resp = np.where(x > analytic_null_quantile(0.999, K, M), 1.0, np.where(x > 0, 0.1, 0.0))  # (n,) P(learned | x)
    a, b = _beta_moments(xc, resp) if resp.any() else (1.0, 1.0)
    null_weight, log_likelihood, prev, converged = 1.0, float(log_null.sum()), -np.inf, False
    for iteration in range(1, max_iter + 1):  # noqa: B007 (its last value is reported)
        # M-step: the weight is the mean responsibility; (a, b) the responsibility-weighted Beta MLE.
        total = float(resp.sum())
        if total <= 1e-9 * n:  # the learned component has emptied: the data are all null
            null_weight, converged = 1.0, True
            break
        null_weight = 1.0 - total / n
        a, b = _beta_mle(float(resp @ log_x) / total, float(resp @ log_1mx) / total, a, b)
        if family is not None:
            shift, scale = family.fit(x, 1.0 - resp, (shift, scale))
            log_null = family.logpdf(x, shift, scale)
        # E-step, and the log-likelihood of the parameters just fitted.
        resp, log_mix = _e_step(log_null, _real_logpdf(x, a, b), null_weight)
        log_likelihood = float(log_mix.sum())
        if abs(log_likelihood - prev) <= tol * (1 + abs(log_likelihood)):
            converged = True
            break
        prev = log_likelihood
    # A learned Beta can mimic the null itself, so on null-only data EM parks an arbitrary share of the values in it
    # (10-20% in trials) for a log-likelihood gain of a few units. Keep the learned component only if it pays for its
    # three parameters (null_weight, a, b) by BIC against the null alone; otherwise report the null alone.
    null_shift, null_scale = (0.0, 1.0) if family is None else family.fit(x, np.ones(n), (shift, scale))
    null_log_likelihood = float(
        (_null_logpdf(x, K, M) if family is None else family.logpdf(x, null_shift, null_scale)).sum()
    )
    if null_weight == 1.0 or 2 * (log_likelihood - null_log_likelihood) <= 3 * np.log(n):
        null_weight, log_likelihood, shift, scale = 1.0, null_log_likelihood, null_shift, null_scale
    return MixtureFit(
        n=n,
        null_weight=float(null_weight),
        n_real=float((1 - null_weight) * n),
        a=a,
        b=b,
        log_likelihood=log_likelihood,
        iterations=iteration,
        K=K,
        M=M,
        converged=converged,
        shift=shift,
        scale=scale,
    )
