"""P-values for "a feature is found again in a reference dictionary", with tails fine enough for BH over thousands.

The exact null of footnote 2 is a family in two numbers: a feature's MCS against M unrelated unit vectors in K
dimensions is the largest of M cosines, each with (c + 1) / 2 ~ Beta((K - 1) / 2, (K - 1) / 2), so

    P(MCS >= c) = 1 - F_K(c) ** M        (``tail_p``, computed as -expm1(M log1p(-sf)): exact down to 1e-300)

For isotropic random directions (K, M) = (d_in, |reference|) is exact (``exact_tail``). Learned references and
data-shaped queries are not isotropic: their MCS runs higher and clusters. ``fit_tail`` takes a sample of null MCS
values (null queries against the reference) and keeps it: below a high threshold u (the sample's top 10%, at least
50 values, lie above it) the p-value is the sample's own, (1 + #{v >= c}) / (n + 1); above u, where the sample thins
out and then ends, it is the sample's share above u times the conditional tail of the family whose (K, M) fit the
values above u best (maximum likelihood, truncated at u: "peaks over a threshold"). So the p-value follows the
sample where it has data, and reaches far below 1/n beyond it along a tail shaped like the exact null's.
Calibration against other null families is in tests/analysis/test_verdicts.py and benchmarks/bench_verdicts.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

from sae_sweep.errors import ConfigError, DataError

TIE = 1e-6  # cosines closer than this are equal: float32 products of unit vectors differ by ~1e-7 with their order


@dataclass(frozen=True)
class Tail:
    """The null's upper tail for one reference: the family's ``K`` and ``M`` (real numbers), and where fitted, the
    sample it was fitted to (sorted) with the threshold above which the family takes over."""

    K: float | None  # None: the sample alone, no family beyond it (``empirical_tail``)
    M: float | None
    sample: np.ndarray | None = None  # sorted null MCS values; None: the exact null, used alone
    threshold: float = 1.0  # u: the family's conditional tail above it, the sample's own p below

    def p(self, c: np.ndarray) -> np.ndarray:
        """P(MCS >= c) elementwise."""
        c = np.asarray(c, dtype=np.float64)
        if self.sample is None:
            return tail_p(c, self.K, self.M)
        n = self.sample.size
        # (1 + #{v >= c}) / (n + 1), a null value within float32 rounding of c counted as a tie: identical rows give
        # a cosine of 1 + 1e-7 through one product's summation order and 1 - 1e-7 through another's
        own = (n - np.searchsorted(self.sample, c - TIE, side="left") + 1) / (n + 1)
        if self.K is None:
            return own
        above = (n - np.searchsorted(self.sample, self.threshold, side="right")) / (n + 1)
        family = above * tail_p(c, self.K, self.M) / tail_p(self.threshold, self.K, self.M)
        return np.where(c > self.threshold, family, own)


def _log_cdf_sf(c: np.ndarray, K: float) -> tuple[np.ndarray, np.ndarray]:
    """(log F_K(c), sf_K(c)) of one random cosine in K dimensions, from the Beta's upper tail (precise near c = 1)."""
    s = (K - 1) / 2
    u = (np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0) + 1) / 2
    sf = scipy.special.betainc(s, s, 1 - u)  # P(Beta(s, s) > u) = I_{1-u}(s, s) by symmetry
    with np.errstate(divide="ignore"):
        return np.log1p(-sf), sf


def tail_p(c: np.ndarray | float, K: float, M: float) -> np.ndarray:
    """P(max of M random cosines in K dimensions >= c), elementwise, for real K > 1 and M > 0."""
    if not K > 1 or not M > 0:
        raise ConfigError(f"the null tail needs K > 1 and M > 0, got K={K!r}, M={M!r}")
    log_f, _ = _log_cdf_sf(c, K)
    return -np.expm1(M * log_f)


def _minus_loglik(v: np.ndarray, u: float, K: float, M: float) -> float:
    """Minus the log-likelihood of the values ``v`` (all above ``u``) under the family truncated below u."""
    s = (K - 1) / 2
    log_f, _ = _log_cdf_sf(v, K)
    log_pdf = scipy.stats.beta.logpdf((v + 1) / 2, s, s) - np.log(2)
    log_s_u = np.log(tail_p(u, K, M))  # log P(MCS >= u): the truncation
    total = v.size * np.log(M) + float(log_pdf.sum()) + (M - 1) * float(log_f.sum()) - v.size * log_s_u
    return -total if np.isfinite(total) else np.inf


def fit_tail(values: np.ndarray, top: float = 0.1, least: int = 50) -> Tail:
    """The null tail of the MCS sample ``values`` (n,): the sample below a threshold that leaves its top ``top``
    share (and at least ``least`` values) above, and above it the family fitted to those values."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.ndim != 1 or v.size < 2 * least:
        raise DataError(f"fitting the null's tail needs at least {2 * least} null MCS values, got {v.size}")
    if not np.isfinite(v).all() or (np.abs(v) >= 1).any():
        raise DataError("null MCS values must be finite and strictly inside (-1, 1)")
    k = max(least, int(top * v.size))
    u = float(v[-k - 1])
    exceed = v[v > u]
    start = np.log([30.0, 100.0])
    res = scipy.optimize.minimize(
        lambda x: _minus_loglik(exceed, u, float(np.exp(x[0])) + 1, float(np.exp(x[1]))),
        start,
        method="Nelder-Mead",
        options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000},
    )
    return Tail(float(np.exp(res.x[0])) + 1, float(np.exp(res.x[1])), v, u)


def empirical_tail(values: np.ndarray) -> Tail:
    """The null MCS sample ``values`` as its own tail, (1 + #{v >= c}) / (n + 1), never below 1 / (n + 1): for nulls
    whose values have point masses no smooth family represents (activation rows: repeated contexts repeat rows)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.ndim != 1 or v.size < 1 or not np.isfinite(v).all():
        raise DataError(f"an empirical null needs finite MCS values, got shape {v.shape}")
    return Tail(None, None, v)


def exact_tail(K: int, M: int) -> Tail:
    """The exact isotropic null for a reference of M atoms in K dimensions."""
    return Tail(float(K), float(M))
