"""The kernels the sparse architectures train with (archs.py): exact selections, the straight-through functions of
JumpReLU, and gradients and decodes over the selected entries only.

Selections are exact and deterministic: ``top_mask`` keeps exactly k entries, and among entries equal to the k-th
largest it keeps the lowest indices (``torch.topk`` documents no order for ties). The architectures other than ReLU
train through autograd (the hand-written step, sae_step.py, is the ReLU + L1 loss's) over the selected entries only:
they select from pre-activations computed without a graph and take their values through ``pre_at``, whose backward
touches the selected entries alone, and the decode runs over the selected codes (``decode_entries``).
JumpReLU's entries are its positive codes and the zero ones within bandwidth / 2 below their threshold, the only
ones its threshold's pseudo-gradient reads. One dense product per step, the encoder's, instead of five.

AuxK (``aux_reconstruction``): the residual e = x - x^ (no gradient through it) is reconstructed from the aux_k
largest ReLU(pre) among the dead features only (silent for ``dead_window`` steps).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def top_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of ``scores`` (..., n) with exactly min(k, n) True per row: the largest, ties to the lower index."""
    n = scores.shape[-1]
    k = min(k, n)
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    kth = scores.topk(k, dim=-1).values[..., -1:]  # (..., 1) the k-th largest value
    keep = scores > kth
    tied = scores == kth
    need = k - keep.sum(-1, keepdim=True)  # (..., 1) how many of the tied entries make up k
    if bool((tied.sum(-1, keepdim=True) > need).any()):  # rare on real data: a cumsum only when ties must be split
        keep |= tied & (tied.cumsum(-1) <= need)
    else:
        keep |= tied
    return keep


class _JumpReLU(torch.autograd.Function):
    """pre * H(pre - theta); d/dpre = H(pre - theta), d/dtheta = -(theta / eps) K((pre - theta) / eps)."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pre, theta = ctx.saved_tensors
        window = ((pre - theta) / ctx.eps).abs() < 0.5  # K, the rectangle kernel: 1 on (-1/2, 1/2)
        grad_theta = (-(theta / ctx.eps) * grad * window).sum_to_size(theta.shape)  # over the batch when theta is (J,)
        return grad * (pre > theta), grad_theta, None


class _Step(torch.autograd.Function):
    """H(pre - theta); no gradient to pre, d/dtheta = -(1 / eps) K((pre - theta) / eps)."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pre, theta = ctx.saved_tensors
        window = ((pre - theta) / ctx.eps).abs() < 0.5
        return None, (-(1.0 / ctx.eps) * grad * window).sum_to_size(theta.shape), None


def jumprelu(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, J) codes of a JumpReLU with per-feature thresholds ``theta`` (J,)."""
    return _JumpReLU.apply(pre, theta, eps)


def jumprelu_index(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> Index:
    """JumpReLU's entries, pre > theta - eps / 2 (pre (B, J), no gradient needed): the positive codes and the zero
    ones within eps / 2 below their threshold, whose reconstruction gradient the threshold's pseudo-derivative sums as
    well; every other code has none, and adds nothing to the L0 or its gradient."""
    return (pre > theta.detach()[None] - eps / 2).nonzero(as_tuple=True)


def jumprelu_entries(index: Index, v: torch.Tensor, theta: torch.Tensor, eps: float) -> tuple[Entries, torch.Tensor]:
    """(JumpReLU's codes as entries, its summed L0 with the threshold's pseudo-gradient) over ``index``
    (``jumprelu_index``), from the pre-activations there, ``v`` (nnz,) with their gradient."""
    rows, cols = index
    theta_at = theta[cols]  # (nnz,)
    return (rows, cols, jumprelu(v, theta_at, eps)), heaviside(v, theta_at, eps).sum()


def heaviside(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, J) indicators of pre > theta, whose sum over features is the L0 the JumpReLU loss penalises."""
    return _Step.apply(pre, theta, eps)


def top_entries(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (..., k) of each row's k largest ``scores`` (..., n), ascending: ``top_mask``'s entries, found by one
    ``topk`` of k + 1 (a tie across the k-th place shows as equal k-th and (k+1)-th values, and only then is the
    mask built), and sorted so that every later sum runs in one order."""
    n = scores.shape[-1]
    k = min(k, n)
    if k == n:
        return torch.arange(n, device=scores.device).expand(*scores.shape[:-1], n)
    values, idx = scores.topk(k + 1, dim=-1)
    if bool((values[..., k - 1] == values[..., k]).any()):
        idx = top_mask(scores, k).nonzero()[:, -1].view(*scores.shape[:-1], k)  # row-major: already ascending
        return idx
    return idx[..., :k].sort(dim=-1).values


Entries = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (rows, cols, values), each (nnz,): the selected codes


Index = tuple[torch.Tensor, torch.Tensor]  # (rows, cols), each (nnz,): the selected entries of a (B, J) matrix
PreAt = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (rows, cols) -> pre-activations there, differentiable


class _PreAt(torch.autograd.Function):
    """pre[rows, cols] of pre = x W^T + b, computed densely beforehand; the backward is over the entries alone:
    dW[j] += g x[b], db[j] += g, dx[b] += g W[j] for each entry (b, j) with gradient g. O(nnz d), where the dense
    weight gradient is a (J, B) x (B, d) product and the gather's backward fills a (B, J) matrix."""

    @staticmethod
    def forward(ctx, weight, bias, x, pre, rows, cols):
        ctx.save_for_backward(weight, x, rows, cols)
        return pre.reshape(-1).index_select(0, rows * pre.shape[1] + cols)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, x, rows, cols = ctx.saved_tensors
        g_w = g_b = g_x = None
        if ctx.needs_input_grad[0]:
            g_w = torch.zeros_like(weight).index_add_(0, cols, scale_rows(x.index_select(0, rows), grad))  # (J, d)
        if ctx.needs_input_grad[1]:
            g_b = torch.zeros(weight.shape[0], dtype=grad.dtype, device=grad.device).index_add_(0, cols, grad)
        if ctx.needs_input_grad[2]:  # x = x - b_dec: the decoder bias's gradient flows through x
            g_x = torch.zeros_like(x).index_add_(0, rows, scale_rows(weight.index_select(0, cols), grad))  # (B, d)
        return g_w, g_b, g_x, None, None, None


def pre_at(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, pre: torch.Tensor) -> PreAt:
    """A function of (rows, cols) giving ``pre`` there (``pre`` = x weight^T + bias, (B, J), without a graph) with
    gradients to weight (J, d), bias (J,) and x (B, d) over those entries only."""
    return lambda rows, cols: _PreAt.apply(weight, bias, x, pre, rows, cols)


def row_index(idx: torch.Tensor) -> Index:
    """The entries of the columns ``idx`` (B, k) of each row, row-major."""
    rows = torch.arange(idx.shape[0], device=idx.device).repeat_interleave(idx.shape[1])
    return rows, idx.reshape(-1)


def topk_index(pre: torch.Tensor, k: int) -> Index:
    """TopK's entries: each row's k largest pre-activations (pre (B, J), no gradient needed)."""
    return row_index(top_entries(pre, k))


def batchtopk_index(pre: torch.Tensor, k: int) -> Index:
    """BatchTopK's entries: the k x B largest ReLU(pre) of the batch (B, J), row-major."""
    flat = top_entries(torch.relu(pre).reshape(1, -1), k * pre.shape[0])[0]  # ascending: row-major
    return flat.div(pre.shape[1], rounding_mode="floor"), flat.remainder(pre.shape[1])


def relu_entries(index: Index, at: PreAt) -> Entries:
    """ReLU(pre) at ``index`` as entries (values carry the gradient through ``at``)."""
    rows, cols = index
    return rows, cols, torch.relu(at(rows, cols))


def to_dense(entries: Entries, shape: tuple[int, int], keep_grad: bool = False) -> torch.Tensor:
    """(B, J) codes from entries, detached (what the metrics and the firing record read) unless ``keep_grad``."""
    rows, cols, values = entries
    out = torch.zeros(shape, dtype=values.dtype, device=values.device)
    return out.index_put((rows, cols), values if keep_grad else values.detach())


def scale_rows(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(n, d) rows of ``m`` times ``v`` (n,). Written as a (d, n) product by broadcasting over the last axis: torch's
    broadcast of an (n, 1) factor along rows ran 3-6x slower on CPU (benchmarks/bench_archs.py)."""
    return (m.t() * v).t()


class _DecodeEntries(torch.autograd.Function):
    """codes @ D^T over the entries (rows, cols, values) of the codes: out[b] = sum over b's entries of v D[:, j]. The
    backward gathers and index-adds as the forward: dv = grad[b] . D[:, j], dD[:, j] += v grad[b]."""

    @staticmethod
    def forward(ctx, values, decoder, rows, cols, batch: int):
        atoms = decoder.t().index_select(0, cols)  # (nnz, d): rows of the feature-major D^T, a contiguous gather
        ctx.save_for_backward(values, decoder, atoms, rows, cols)
        out = torch.zeros(batch, decoder.shape[0], dtype=values.dtype, device=values.device)
        return out.index_add_(0, rows, scale_rows(atoms, values))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        values, decoder, atoms, rows, cols = ctx.saved_tensors
        g_rows = grad.index_select(0, rows)  # (nnz, d)
        g_values = (g_rows * atoms).sum(1) if ctx.needs_input_grad[0] else None
        g_dec = None
        if ctx.needs_input_grad[1]:  # (J, d) feature-major, returned as the (d, J) view the decoder is
            g_dec = torch.zeros_like(decoder.t()).index_add_(0, cols, scale_rows(g_rows, values)).t()
        return g_values, g_dec, None, None, None


def decode_entries(entries: Entries, decoder: torch.Tensor, batch: int) -> torch.Tensor:
    """(batch, d) = codes @ D^T over the entries only, differentiable: O(nnz x d) instead of O(B J d).

    The top-k architectures fire ~k of J features, so the decode and its two backward products (the code and the
    decoder gradients) shrink to gathers and index-adds; only the encoder's forward product stays dense.
    """
    rows, cols, values = entries
    return _DecodeEntries.apply(values, decoder, rows, cols, batch)


def topk_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of each row's k largest pre-activations, zero elsewhere, (B, J) (inference)."""
    rows, cols = topk_index(pre, k)
    return to_dense((rows, cols, torch.relu(pre[rows, cols])), tuple(pre.shape))


def smallest_kept(codes: torch.Tensor) -> float | None:
    """The smallest positive code of a batch (BatchTopK's threshold sample); None when none is positive."""
    positive = codes.detach()[codes.detach() > 0]
    return float(positive.min()) if positive.numel() else None


def aux_reconstruction(pre: torch.Tensor, at: PreAt, dead: torch.Tensor, aux_k: int, decoder: torch.Tensor):
    """(B, d) Gao's AuxK reconstruction: the aux_k largest ReLU(pre) among ``dead`` (J,) features, decoded by D."""
    cols = dead.nonzero().squeeze(1)  # (n_dead,) ascending, so ties still go to the lower feature index
    idx = cols[top_entries(pre.detach().index_select(1, cols), aux_k)]  # (B, min(aux_k, n_dead))
    return decode_entries(relu_entries(row_index(idx), at), decoder, pre.shape[0])
