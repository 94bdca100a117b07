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
* Harder, anisotropic baselines: ``gaussian_dictionary`` (rows ~ N(0, cov), e.g. cov = ``activation_covariance``)
  and ``activation_dictionary`` (rows drawn from the activations themselves).

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

from sae_sweep import ConfigError, DataError

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


# ----------------------------------------------------------------------------------------- analytic null: log and draws
def analytic_null_logpdf(x: ArrayLike | float, K: int, M: int) -> np.ndarray:
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
        raise ValueError(f"n must be non-negative, got {n}")
    u = 1.0 - np.random.default_rng(seed).random(n)  # uniform on (0, 1]: log(u) is finite
    upper = -np.expm1(np.log(u) / M)  # (n,) P(one cosine > quantile)
    return 2 * scipy.stats.beta.isf(upper, s, s) - 1


# ------------------------------------------------------------------------------------------------------ row-wise cosine
def rowwise_cosine(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Cosine of row i of ``a`` with row i of ``b``: (n, K), (n, K) -> float64 (n,) in [-1, 1].

    For pairs that belong together row by row: a feature's encoder row against its decoder row, or a decoder now
    against the same decoder at initialisation. A zero row raises DataError naming the argument and the row.
    """
    a_t, b_t = _as_tensor(a, "a"), _as_tensor(b, "b")
    if a_t.shape != b_t.shape:
        raise DataError(
            f"a has shape {tuple(a_t.shape)} but b has shape {tuple(b_t.shape)}; rowwise_cosine pairs row i of a with "
            "row i of b, so both need the same (n, K) shape"
        )
    a64 = a_t.detach().to(device="cpu", dtype=torch.float64)  # (n, K)
    b64 = b_t.detach().to(device="cpu", dtype=torch.float64)  # (n, K)
    norms = []
    for name, x in (("a", a64), ("b", b64)):
        norm = torch.linalg.vector_norm(x, dim=1)  # (n,)
        zero = torch.nonzero(norm == 0)[:, 0]
        if zero.numel():
            raise DataError(
                f"row {int(zero[0])} of {name} has zero norm ({zero.numel()} zero rows in all); its cosine is "
                "undefined: drop dead features before comparing"
            )
        norms.append(norm)
    cos = (a64 * b64).sum(dim=1) / (norms[0] * norms[1])
    return cos.clamp_(-1.0, 1.0).numpy()


# ---------------------------------------------------------------------------------------- anisotropic random baselines
# A random dictionary with the data's covariance, or rows of the data itself, is a harder null than isotropic N(0, I):
# it asks whether SAE features are more alike than vectors that merely share the activations' dominant directions.
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
    eig, vec = np.linalg.eigh((cov + cov.T) / 2)  # ascending eigenvalues, orthonormal columns
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
