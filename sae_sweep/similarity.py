"""Compare SAE dictionaries by max cosine similarity (MCS), with exact and sampled random baselines.

Conventions
-----------
* Feature vectors are ROWS: every function takes ``(n, K)`` arrays (numpy or torch), one feature per row, ``K`` the
  width (the model dimension). The project's dictionaries store the decoder as ``(d_in, dict_size)`` with features as
  columns, so callers pass ``decoder.T``.
* ``max_cosine_similarity(a, b)`` is directional: for each row of ``a`` the best cosine to any row of ``b``. Swap the
  arguments for the other direction.
* Random baseline: dictionaries with i.i.d. N(0, 1) entries. For two independent Gaussian vectors in ``K`` dims one
  cosine ``c`` satisfies ``(c + 1) / 2 ~ Beta((K - 1) / 2, (K - 1) / 2)``; the max over ``M`` independent cosines has
  CDF ``F(x) ** M`` and density ``M f(x) F(x) ** (M - 1)``. The ``M`` cosines of one row of ``a`` against ``M`` rows of
  ``b`` are independent exactly (each depends only on its own row of ``b`` once the ``a`` row is fixed), so the
  analytic null is the exact law of one MCS value of random dictionaries; different rows of ``a`` share ``b`` and are
  only weakly dependent.
* Distances between MCS distributions use Wasserstein-1 (the earth mover's distance) on the 1-D samples.

The MCS kernel never holds the full ``n_a x n_b`` similarity matrix. On CPU it walks over tiles of ``chunk_size`` rows
of ``a`` times ``_COL_BLOCK`` rows of ``b`` and takes each tile's row maxima while the tile is in cache (pass 1), then
recomputes every row against its winning block only to find the index (pass 2, 1 / n_blocks of the work). On a GPU
each chunk is one full-width product reduced with ``torch.max``.
"""

from __future__ import annotations

import numpy as np
import scipy.integrate
import scipy.optimize
import scipy.stats
import torch

ArrayLike = np.ndarray | torch.Tensor

# Rows of ``b`` per matmul on CPU. The row maxima of a 4096 x 1024 float32 block (16 MiB) are taken right after the
# kernel wrote it, while it is still in the last-level cache: several times cheaper than a max over a full-width
# chunk, and the matmul itself runs faster than when it writes a chunk_size x n_b buffer. Fastest of 1024/2048/4096
# at 8192 x 16384 and 32768 x 65536 (benchmarks/bench_mcs.py). Tests patch it to exercise several blocks.
_COL_BLOCK = 1024


# --------------------------------------------------------------------------------------------------- input handling
def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    """A 2-D tensor of ``x``; numpy input is shared, copied only when torch cannot (negative strides, read-only)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        arr = np.asarray(x)
        if any(stride < 0 for stride in arr.strides) or not arr.flags.writeable:
            arr = arr.copy()
        t = torch.from_numpy(arr)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, K) array of row vectors, got shape {tuple(t.shape)}")
    return t


def _check_widths(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a has width {a.shape[1]} but b has width {b.shape[1]}")


def _unit_rows(x: torch.Tensor, name: str, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Rows of ``x`` scaled to unit L2 norm, as a contiguous ``dtype`` tensor on ``device``.

    Raises ValueError naming the first zero-norm row (its cosine is undefined).
    """
    x = x.to(device=device, dtype=dtype)
    norms = torch.linalg.vector_norm(x, dim=1)  # (n,)
    zero = torch.nonzero(norms == 0)
    if zero.numel():
        raise ValueError(f"row {int(zero[0, 0])} of {name} has zero norm; its cosine similarity is undefined")
    return (x / norms[:, None]).contiguous()


def _default_device(device: str | None) -> str:
    if device is not None:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------------ max cosine similarity
def max_cosine_similarity(
    a: ArrayLike, b: ArrayLike, chunk_size: int = 4096, device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``a`` (n_a, K), the max cosine similarity to any row of ``b`` (n_b, K) and that row's index.

    Returns ``(values, indices)``: float32 (n_a,) in [-1, 1] and int64 (n_a,). Rows are normalised once; the products
    are computed in float32 with torch, ``chunk_size`` rows of ``a`` at a time, so extra memory is at most
    ``chunk_size x n_b`` floats (on CPU ``chunk_size x 1024``), never ``n_a x n_b``. ``device=None`` uses CUDA when
    available, else CPU. The default chunk size was the fastest measured on CPU (benchmarks/bench_mcs.py). Matches
    tied within float32 rounding may resolve to either index.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    a_t, b_t = _as_tensor(a, "a"), _as_tensor(b, "b")
    _check_widths(a_t, b_t)
    if b_t.shape[0] == 0:
        raise ValueError("b has no rows")
    dev = _default_device(device)
    a_n = _unit_rows(a_t, "a", torch.float32, dev)  # (n_a, K)
    b_n = _unit_rows(b_t, "b", torch.float32, dev)  # (n_b, K)
    n_a, n_b = a_n.shape[0], b_n.shape[0]
    # On a GPU one full-width product per chunk is fastest; on CPU cache-sized column blocks win.
    block = n_b if torch.device(dev).type == "cuda" else min(_COL_BLOCK, n_b)
    buf = torch.empty(min(chunk_size, n_a) * block, dtype=torch.float32, device=dev)  # reused matmul output
    if block == n_b:  # one block per chunk: max and argmax straight from the product
        values = torch.empty(n_a, dtype=torch.float32, device=dev)
        indices = torch.empty(n_a, dtype=torch.int64, device=dev)
        for start in range(0, n_a, chunk_size):
            stop = min(start + chunk_size, n_a)
            out = torch.mm(a_n[start:stop], b_n.t(), out=buf[: (stop - start) * n_b].view(stop - start, n_b))
            torch.max(out, dim=1, out=(values[start:stop], indices[start:stop]))
    else:
        winner = _winning_blocks(a_n, b_n, block, chunk_size, buf)
        values, indices = _argmax_in_blocks(a_n, b_n, winner, block, chunk_size)
    values.clamp_(-1.0, 1.0)  # rounding can put a self-match at 1 + 1e-7
    return values.cpu().numpy(), indices.cpu().numpy()


def _winning_blocks(
    a_n: torch.Tensor, b_n: torch.Tensor, block: int, chunk_size: int, buf: torch.Tensor
) -> torch.Tensor:
    """Pass 1: for each row of ``a_n`` the column block of ``b_n`` holding its best match, (n_a,) int64.

    Only the row max of each (chunk, block) tile is taken, while the tile is in cache: amax is several times cheaper
    than max-with-indices, and the indices are recovered in pass 2 from 1 / n_blocks of the work.
    """
    n_a, n_b = a_n.shape[0], b_n.shape[0]
    bt = b_n.t()  # (K, n_b) view; BLAS takes the transposed operand without a copy
    starts = range(0, n_b, block)
    block_max = torch.empty(len(starts), min(chunk_size, n_a), dtype=a_n.dtype, device=a_n.device)  # (n_blocks, m)
    winner = torch.empty(n_a, dtype=torch.int64, device=a_n.device)
    for start in range(0, n_a, chunk_size):
        a_c = a_n[start : start + chunk_size]  # (m, K)
        m = a_c.shape[0]
        for j, s in enumerate(starts):
            w = min(block, n_b - s)
            out = torch.mm(a_c, bt[:, s : s + w], out=buf[: m * w].view(m, w))  # (m, w)
            torch.amax(out, dim=1, out=block_max[j, :m])
        torch.argmax(block_max[:, :m], dim=0, out=winner[start : start + m])
    return winner


def _argmax_in_blocks(
    a_n: torch.Tensor, b_n: torch.Tensor, winner: torch.Tensor, block: int, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass 2: recompute each row's products with its winning block only; its max and the index of that max.

    Rows are grouped by block so each block is one matmul (in chunks of ``chunk_size`` rows to bound memory).
    """
    n_a, n_b = a_n.shape[0], b_n.shape[0]
    values = torch.empty(n_a, dtype=a_n.dtype, device=a_n.device)
    indices = torch.empty(n_a, dtype=torch.int64, device=a_n.device)
    order = torch.argsort(winner)  # rows grouped by winning block
    counts = torch.bincount(winner, minlength=-(-n_b // block)).tolist()
    first = 0
    for j, count in enumerate(counts):
        b_j = b_n[j * block : (j + 1) * block].t()  # (K, w)
        for sub in range(first, first + count, chunk_size):
            rows = order[sub : min(sub + chunk_size, first + count)]  # rows whose best match lies in block j
            v, i = torch.max(a_n[rows] @ b_j, dim=1)
            values[rows], indices[rows] = v, i + j * block
        first += count
    return values, indices


# ------------------------------------------------------------------------------------------------------ analytic null
def _beta_shape(K: int) -> float:
    if K < 2:
        raise ValueError(f"K must be at least 2, got {K}")
    return (K - 1) / 2


def _check_m(M: int) -> None:
    if M < 1:
        raise ValueError(f"M must be at least 1, got {M}")


def _log_single_cdf(x: np.ndarray, K: int) -> np.ndarray:
    """log P(c <= x) for one cosine of two random Gaussian vectors in K dims."""
    s = _beta_shape(K)
    with np.errstate(divide="ignore"):
        return scipy.stats.beta.logcdf((x + 1) / 2, s, s)


def analytic_null_cdf(x: ArrayLike | float, K: int, M: int) -> np.ndarray:
    """P(max of M independent random cosines in K dims <= x), vectorised over x; F^M as exp(M log F)."""
    _check_m(M)
    x = np.asarray(x, dtype=np.float64)
    return np.exp(M * _log_single_cdf(x, K))


def analytic_null_pdf(x: ArrayLike | float, K: int, M: int) -> np.ndarray:
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
        raise ValueError(f"q must lie in [0, 1], got {q}")
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


# ------------------------------------------------------------------------------------------------------ sampled null
def random_dictionary(n: int, K: int, seed: int | np.random.SeedSequence) -> np.ndarray:
    """An (n, K) float32 dictionary with i.i.d. N(0, 1) entries (rows are features)."""
    return np.random.default_rng(seed).standard_normal((n, K), dtype=np.float32)


def sampled_null(n_a: int, n_b: int, K: int, seed: int) -> np.ndarray:
    """MCS values (n_a,) of a random (n_a, K) dictionary against an independent random (n_b, K) one."""
    seed_a, seed_b = np.random.SeedSequence(seed).spawn(2)  # two independent streams from one seed
    values, _ = max_cosine_similarity(random_dictionary(n_a, K, seed_a), random_dictionary(n_b, K, seed_b))
    return values


# ---------------------------------------------------------------------------------------------------------------- EMD
def _sorted_sample(x: ArrayLike) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.sort(x.astype(np.float64, copy=False).ravel())


def _emd_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """W1 of two sorted samples: equal sizes match i-th to i-th order statistic; otherwise scipy's CDF formula."""
    if len(u) == len(v):
        return float(np.mean(np.abs(u - v)))
    return float(scipy.stats.wasserstein_distance(u, v))


def emd(u: ArrayLike, v: ArrayLike) -> float:
    """Wasserstein-1 (earth mover's) distance between two 1-D samples; the value of scipy.stats.wasserstein_distance."""
    return _emd_sorted(_sorted_sample(u), _sorted_sample(v))


def emd_matrix(samples: dict[str, ArrayLike]) -> tuple[list[str], np.ndarray]:
    """Names and the symmetric (n, n) W1 matrix, zero diagonal; each sample sorted once, each pair computed once."""
    names = list(samples)
    ordered = [_sorted_sample(samples[name]) for name in names]
    dist = np.zeros((len(names), len(names)))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            dist[i, j] = dist[j, i] = _emd_sorted(ordered[i], ordered[j])
    return names, dist


# ----------------------------------------------------------------------------------------------------------- matching
def hungarian_match(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of rows of ``a`` to rows of ``b`` maximising the total cosine similarity.

    Returns (rows of a, matched rows of b, their cosines), min(n_a, n_b) of each. Builds the full n_a x n_b matrix in
    float64, so it is meant for a few thousand rows.
    """
    a_t, b_t = _as_tensor(a, "a"), _as_tensor(b, "b")
    _check_widths(a_t, b_t)
    a_n = _unit_rows(a_t, "a", torch.float64, "cpu").numpy()  # (n_a, K)
    b_n = _unit_rows(b_t, "b", torch.float64, "cpu").numpy()  # (n_b, K)
    sim = a_n @ b_n.T  # (n_a, n_b)
    rows, cols = scipy.optimize.linear_sum_assignment(sim, maximize=True)
    return rows.astype(np.int64), cols.astype(np.int64), sim[rows, cols]
