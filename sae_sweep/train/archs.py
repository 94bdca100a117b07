"""SAE architectures (``sae.arch``): how pre-activations become codes, and what each one adds to the loss.

With pre = W_enc (x - b_dec) + b_enc, shape (B, J)::

    relu       c = ReLU(pre); loss = mse + l1_coeff * mean_b ||c||_1             the note's (HoagyC/sparse_coding)
    topk       c = ReLU(pre) on each row's k largest pre-activations, 0 elsewhere; loss = mse + aux_coeff * AuxK
               (Gao et al. 2024, "Scaling and evaluating sparse autoencoders")
    batchtopk  training: the k x B largest ReLU(pre) of the whole batch; inference: c = pre * [pre > theta], theta the
               running average of each training batch's smallest kept code (Bussmann et al. 2024)
    jumprelu   c = pre * H(pre - theta_j), theta = exp(log_threshold) learned per feature; loss = mse + l0_coeff *
               mean_b ||c||_0, theta trained through the paper's straight-through pseudo-derivatives with a
               rectangle kernel of width ``bandwidth`` (Rajamanoharan et al. 2024, "Jumping Ahead")

AuxK (topk, batchtopk; ``aux_k = 0`` turns it off): the residual e = x - x^ (no gradient through it) is
reconstructed from the aux_k largest ReLU(pre) among the dead features only (silent for ``dead_window`` steps), and
aux_coeff x mean((e^ - e)^2) is added, so dead features get a gradient toward what the live ones miss.

Selections are exact and deterministic: ``top_mask`` keeps exactly k entries, and among entries equal to the k-th
largest it keeps the lowest indices (``torch.topk`` documents no order for ties). These architectures train
through autograd (the hand-written step, sae_step.py, is the ReLU + L1 loss's), with the decode over the positive
codes only (``decode_entries``): two dense products per step, the encoder's and its weight gradient, instead of five.
"""

from __future__ import annotations

import torch

ARCHS = ("relu", "topk", "batchtopk", "jumprelu")  # SAELens' names for them: interop/saelens.py, SAELENS_ARCH


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
        grad_theta = -(theta / ctx.eps) * (grad * window).sum(0)
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
        return None, -(1.0 / ctx.eps) * (grad * window).sum(0), None


def jumprelu(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, J) codes of a JumpReLU with per-feature thresholds ``theta`` (J,)."""
    return _JumpReLU.apply(pre, theta, eps)


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


Entries = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (rows, cols, values), each (nnz,): the positive codes


def row_entries(pre: torch.Tensor, idx: torch.Tensor) -> Entries:
    """ReLU(pre) at the columns ``idx`` (B, k) of each row, as entries (values carry the gradient)."""
    rows = torch.arange(pre.shape[0], device=pre.device).repeat_interleave(idx.shape[1])
    return rows, idx.reshape(-1), torch.relu(pre.gather(1, idx)).reshape(-1)


def topk_entries(pre: torch.Tensor, k: int) -> Entries:
    """TopK's codes as entries: ReLU of each row's k largest pre-activations."""
    return row_entries(pre, top_entries(pre.detach(), k))


def batchtopk_entries(pre: torch.Tensor, k: int) -> Entries:
    """BatchTopK's codes as entries: the k x B largest ReLU(pre) of the batch (B, J), in row-major order."""
    act = torch.relu(pre).reshape(-1)
    flat = top_entries(act.detach().unsqueeze(0), k * pre.shape[0])[0]  # ascending: row-major
    return flat.div(pre.shape[1], rounding_mode="floor"), flat.remainder(pre.shape[1]), act[flat]


def dense_entries(codes: torch.Tensor) -> Entries:
    """The positive entries of dense codes (B, J), row-major (JumpReLU's, and the tests')."""
    rows, cols = codes.detach().nonzero(as_tuple=True)
    return rows, cols, codes[rows, cols]


def to_dense(entries: Entries, shape: tuple[int, int], keep_grad: bool = False) -> torch.Tensor:
    """(B, J) codes from entries, detached (what the metrics and the firing record read) unless ``keep_grad``."""
    rows, cols, values = entries
    out = torch.zeros(shape, dtype=values.dtype, device=values.device)
    return out.index_put((rows, cols), values if keep_grad else values.detach())


def decode_entries(entries: Entries, decoder: torch.Tensor, batch: int) -> torch.Tensor:
    """(batch, d) = codes @ D^T over the entries only, differentiable: O(nnz x d) instead of O(B J d).

    The top-k architectures fire ~k of J features, so the decode and its two backward products (the code and the
    decoder gradients) shrink to gathers and an index_add; only the encoder's products stay dense.
    """
    rows, cols, values = entries
    atoms = decoder.t()[cols]  # (nnz, d): rows of the feature-major D^T
    out = torch.zeros(batch, decoder.shape[0], dtype=values.dtype, device=values.device)
    return out.index_add(0, rows, values.unsqueeze(1) * atoms)


def topk_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of each row's k largest pre-activations, zero elsewhere, (B, J) (inference)."""
    return to_dense(topk_entries(pre, k), tuple(pre.shape))


def smallest_kept(codes: torch.Tensor) -> float | None:
    """The smallest positive code of a batch (BatchTopK's threshold sample); None when none is positive."""
    positive = codes.detach()[codes.detach() > 0]
    return float(positive.min()) if positive.numel() else None


def aux_reconstruction(pre: torch.Tensor, dead: torch.Tensor, aux_k: int, decoder: torch.Tensor) -> torch.Tensor:
    """(B, d) Gao's AuxK reconstruction: the aux_k largest ReLU(pre) among ``dead`` (J,) features, decoded by D."""
    masked = pre.detach().masked_fill(~dead, float("-inf"))
    idx = top_entries(masked, min(aux_k, int(dead.sum())))  # (B, aux_k): dead features only
    return decode_entries(row_entries(pre, idx), decoder, pre.shape[0])
