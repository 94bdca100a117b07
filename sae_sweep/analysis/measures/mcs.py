"""Max cosine similarity (MCS) between dictionaries, and the other ways of pairing their features.

Conventions
-----------
* Feature vectors are ROWS: every function takes ``(n, K)`` arrays (numpy or torch), one feature per row, ``K`` the
  width (the model dimension). Dictionaries store the decoder as ``(d_in, dict_size)`` with features as columns, so
  callers pass ``decoder.T``.
* ``max_cosine_similarity(a, b)`` is directional: for each row of ``a`` the best cosine to any row of ``b``. Swap the
  arguments for the other direction. ``hungarian_match`` pairs rows one-to-one; ``rowwise_cosine`` pairs row i with
  row i (an encoder row with its decoder column, a decoder with itself at initialisation).
* Bad arrays (wrong shape, a zero row) raise DataError; a bad parameter (``chunk_size``) raises ConfigError.

The MCS kernel never holds the full ``n_a x n_b`` similarity matrix. On CPU it walks over tiles of ``chunk_size`` rows
of ``a`` times ``_COL_BLOCK`` rows of ``b`` and takes each tile's row maxima while the tile is in cache (pass 1), then
recomputes every row against its winning block only to find the index (pass 2, 1 / n_blocks of the work). On a GPU
each chunk is one full-width product reduced with ``torch.max``.
"""

from __future__ import annotations

import numpy as np
import torch

from sae_sweep.errors import ConfigError, DataError

ArrayLike = np.ndarray | torch.Tensor


# Rows of ``b`` per matmul on CPU. The row maxima of a 4096 x 1024 float32 block (16 MiB) are taken right after the
# kernel wrote it, while it is still in the last-level cache: several times cheaper than a max over a full-width
# chunk, and the matmul itself runs faster than when it writes a chunk_size x n_b buffer. Fastest of 1024/2048/4096
# at 8192 x 16384 and 32768 x 65536 (benchmarks/bench_mcs.py). Tests patch it to exercise several blocks.
_COL_BLOCK = 1024


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
        raise DataError(f"{name} must be a 2-D (n, K) array of row vectors, got shape {tuple(t.shape)}")
    return t


def _check_widths(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise DataError(f"a has width {a.shape[1]} but b has width {b.shape[1]}")


def _unit_rows(x: torch.Tensor, name: str, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Rows of ``x`` scaled to unit L2 norm, as a contiguous ``dtype`` tensor on ``device``.

    Raises DataError naming the first zero-norm row (its cosine is undefined).
    """
    x = x.to(device=device, dtype=dtype)
    norms = torch.linalg.vector_norm(x, dim=1)  # (n,)
    zero = torch.nonzero(norms == 0)
    if zero.numel():
        raise DataError(f"row {int(zero[0, 0])} of {name} has zero norm; its cosine similarity is undefined")
    return (x / norms[:, None]).contiguous()


def _default_device(device: str | None) -> str:
    if device is not None:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


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
        raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
    a_t, b_t = _as_tensor(a, "a"), _as_tensor(b, "b")
    _check_widths(a_t, b_t)
    if b_t.shape[0] == 0:
        raise DataError("b has no rows")
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


def mutual_max_cosine(
    a: ArrayLike, b: ArrayLike, chunk_size: int = 4096, device: str | None = None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``max_cosine_similarity`` both ways from one set of products: ((values, indices) of a's rows in b, (values,
    indices) of b's rows in a). Each product block (chunk_size rows of a x _COL_BLOCK rows of b on CPU, x all of b on
    a GPU) gives its row maxima and its column maxima; a later block replaces a running best only when strictly
    greater, so ties go to the lower index, as in ``max_cosine_similarity``."""
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
    a_t, b_t = _as_tensor(a, "a"), _as_tensor(b, "b")
    _check_widths(a_t, b_t)
    if a_t.shape[0] == 0 or b_t.shape[0] == 0:
        raise DataError("a and b need rows")
    dev = _default_device(device)
    a_n, b_n = _unit_rows(a_t, "a", torch.float32, dev), _unit_rows(b_t, "b", torch.float32, dev)
    n_a, n_b = a_n.shape[0], b_n.shape[0]
    block = n_b if torch.device(dev).type == "cuda" else min(_COL_BLOCK, n_b)
    best_a = torch.full((n_a,), -2.0, device=dev)  # (n_a,) running row maxima, and their columns
    idx_a = torch.zeros(n_a, dtype=torch.int64, device=dev)
    best_b = torch.full((n_b,), -2.0, device=dev)  # (n_b,) running column maxima, and their rows
    idx_b = torch.zeros(n_b, dtype=torch.int64, device=dev)
    for start in range(0, n_a, chunk_size):
        a_c = a_n[start : start + chunk_size]  # (m, K)
        for s in range(0, n_b, block):
            out = a_c @ b_n[s : s + block].t()  # (m, w)
            v, i = torch.max(out, dim=1)  # (m,) this block's best column for each row
            rows = slice(start, start + a_c.shape[0])
            better = v > best_a[rows]
            best_a[rows] = torch.where(better, v, best_a[rows])
            idx_a[rows] = torch.where(better, i + s, idx_a[rows])
            v, i = torch.max(out, dim=0)  # (w,) this chunk's best row for each column
            cols = slice(s, s + out.shape[1])
            better = v > best_b[cols]
            best_b[cols] = torch.where(better, v, best_b[cols])
            idx_b[cols] = torch.where(better, i + start, idx_b[cols])
    out_a = (best_a.clamp_(-1.0, 1.0).cpu().numpy(), idx_a.cpu().numpy())
    return out_a, (best_b.clamp_(-1.0, 1.0).cpu().numpy(), idx_b.cpu().numpy())


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
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415 - scipy only for one-to-one matching

    rows, cols = linear_sum_assignment(sim, maximize=True)
    return rows.astype(np.int64), cols.astype(np.int64), sim[rows, cols]


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
