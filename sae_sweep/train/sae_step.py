"""The SAE's hand-written training step: exact gradients of its loss without autograd, dense or sparse.

Both paths start with the one product that is dense by nature, the encoder's (B, d) x (d, J) pre-activations, and
its ReLU. After that a step needs four more products of size B x d x J (decode, decoder gradient, code gradient,
encoder gradient), but a trained SAE's codes are sparse (L0 ~ 20 of J = 8192), and every one of those four touches
only the active codes:

    dense   four dense products on reused buffers (``_dense_rest``)
    sparse  the active codes as a CSR matrix C (B, J) and its transpose C^T (J, B); decode C D^T, decoder gradient
            C^T r, code gradient sampled at the active entries only (r D)[C != 0], encoder gradient G^T [x, 1]
            (``_sparse_rest``): O(nnz x d) work instead of O(B x J x d)

``choose_path`` picks one per step from the density of positive codes measured on a sample of the batch's rows: a
function of the weights and the batch alone, so a resumed run takes the same path at every step as an uninterrupted
one. The two paths compute the same numbers with sums in different orders (equal to ~1e-7 in float32, to 1e-12 in
float64, tested against autograd on both).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from sae_sweep.errors import ConfigError

STEPS = ("auto", "dense", "sparse")
DENSITY_ROWS = 64  # rows of the batch the density is measured on (the batch is in shuffled order)
SPARSE_MAX_DENSITY = 0.05  # sae.sparse_max_density's default: measured crossover 0.08-0.1 at J = 256-8192

# CSR matrices are a stable part of torch's API for what is used here (construction, mm, sampled_addmm); the
# "beta" notice they raise once per process says nothing to a user of this project.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def choose_path(codes: torch.Tensor, step: str, max_density: float) -> str:
    """``dense`` or ``sparse`` for codes (B, J) >= 0, from ``sae.step`` and the fraction of positive codes."""
    if step != "auto":
        return step
    sample = codes[:DENSITY_ROWS]
    if sample.device.type == "cpu" and sample.is_contiguous():  # a numpy mask and count: 0.08 against 0.27 ms
        nonzero = int(np.count_nonzero(sample.numpy() != 0))
    else:
        nonzero = torch.count_nonzero(sample).item()
    density = nonzero / max(sample.numel(), 1)
    return "sparse" if density <= max_density else "dense"


def work_buffers(sae, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Buffers reused across steps of one batch shape; inputs and d(loss)/d(recon) get a column of ones."""
    key = (x.shape[0], x.dtype, x.device)
    if sae._work_key != key:
        B, J, d = x.shape[0], sae.dict_size, sae.d_in
        new = lambda *shape: torch.empty(*shape, dtype=x.dtype, device=x.device)  # noqa: E731
        sae._work = {
            "codes": new(B, J),
            "grad_codes": new(B, J),
            "x_ext": new(B, d + 1),  # [x, 1]
            "d_recon_ext": new(B, d + 1),  # [d loss / d recon, 1]
            "grad_dec_ext": new(J, d + 1),  # [d loss / d D^T, code sums]
            "grad_enc_ext": new(J, d + 1),  # [d loss / d W_enc, d loss / d b_enc]
            "enc_ext": new(J, d + 1),  # [W_enc, b_enc]
            "dec_ext": new(J, d + 1),  # [D^T, l1 / B]
        }
        sae._work["x_ext"][:, d] = 1.0
        sae._work["d_recon_ext"][:, d] = 1.0
        sae._work_key = key
    return sae._work


@torch.no_grad()
def step_grads(
    sae, x: torch.Tensor, l1_coeff: float, step: str = "auto", max_density: float = SPARSE_MAX_DENSITY
) -> dict:
    """Write d(loss)/d(param) into each ``param.grad`` of an untied SAE and return the loss's parts.

    Returns ``mse`` (a 0-d tensor), ``codes`` (B, J), ``code_sums`` (J,) (the L1 term per feature, and which
    features fired) and ``path`` (the one taken). Tensors are views of buffers the next call overwrites.
    """
    if sae.tied or not sae.architecture.hand_written:
        raise ConfigError(
            "the hand-written step is the untied ReLU + L1 SAE's; use loss() and autograd for tied weights and for "
            f"sae.arch={sae.arch}"
        )
    if step not in STEPS:
        raise ConfigError(f"sae.step must be one of {STEPS}, got {step!r}")
    d = sae.d_in
    w = work_buffers(sae, x)
    codes, x_in = w["codes"], w["x_ext"][:, :d]
    torch.sub(x, sae.decoder_bias, out=x_in) if sae.decoder_bias is not None else x_in.copy_(x)
    w["enc_ext"][:, :d].copy_(sae.encoder)
    w["enc_ext"][:, d].copy_(sae.encoder_bias)
    torch.mm(w["x_ext"], w["enc_ext"].t(), out=codes)  # 1: (B, J) pre-activations, bias via the ones column
    codes.relu_()
    for p in sae.parameters():
        if p.grad is None:
            p.grad = torch.empty_like(p)
    path = choose_path(codes, step, max_density)
    rest = _sparse_rest if path == "sparse" else _dense_rest
    mse, code_sums = rest(sae, w, x, l1_coeff)
    if sae.decoder_bias is not None:
        # b_dec enters twice: added to x^, and subtracted from x before encoding.
        d_recon = w["d_recon_ext"][:, :d]
        torch.sub(d_recon.sum(0), sae.encoder_bias.grad @ sae.encoder, out=sae.decoder_bias.grad)
    return {"mse": mse, "codes": codes, "code_sums": code_sums, "path": path}


def _reconstruction_error(sae, w: dict, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Write d(mse)/d(recon) = 2 (x^ - x) / (B d) into the d_recon buffer; return the mse."""
    d_recon = w["d_recon_ext"][:, : sae.d_in]
    if sae.decoder_bias is not None:
        recon += sae.decoder_bias
    torch.sub(recon, x, out=d_recon)
    mse = d_recon.pow(2).mean()
    d_recon.mul_(2.0 / d_recon.numel())
    return mse


def _dense_rest(sae, w: dict, x: torch.Tensor, l1_coeff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Products 2-5 as dense matrix products; a column of ones carries the L1 gradient, code sums and bias grad."""
    B, d = x.shape[0], sae.d_in
    codes, grad_codes = w["codes"], w["grad_codes"]
    mse = _reconstruction_error(sae, w, x, codes @ sae.decoder.t())  # 2: (B, d)
    torch.mm(codes.t(), w["d_recon_ext"], out=w["grad_dec_ext"])  # 3: (J, d+1); last column: codes.sum(0)
    sae.decoder.grad.t().copy_(w["grad_dec_ext"][:, :d])
    w["dec_ext"][:, :d].copy_(sae.decoder.t())
    w["dec_ext"][:, d].fill_(l1_coeff / B)  # d(l1 term)/d c for c >= 0, added via the ones column
    torch.mm(w["d_recon_ext"], w["dec_ext"].t(), out=grad_codes)  # 4: (B, J)
    torch.ops.aten.threshold_backward.grad_input(grad_codes, codes, 0.0, grad_input=grad_codes)  # ReLU'
    torch.mm(grad_codes.t(), w["x_ext"], out=w["grad_enc_ext"])  # 5: (J, d+1); last column: bias grad
    sae.encoder.grad.copy_(w["grad_enc_ext"][:, :d])
    sae.encoder_bias.grad.copy_(w["grad_enc_ext"][:, d])
    return mse, w["grad_dec_ext"][:, d]


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _row_pointers(index: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row pointers (n + 1,) for entries whose row ``index`` (nnz,) is sorted, in ``index``'s dtype."""
    crow = torch.zeros(n + 1, dtype=index.dtype, device=index.device)
    crow[1:] = torch.cumsum(torch.bincount(index, minlength=n), 0)
    return crow


def _positive(codes: torch.Tensor) -> torch.Tensor:
    """Row-major flat positions (nnz,) of the nonzero entries of ``codes`` (B, J), ascending.

    On the CPU through numpy: a boolean mask and ``flatnonzero`` took 0.7 ms where ``torch.nonzero`` took 2.6 ms at
    B=256, J=8192 (one thread), the largest cost of a sparse step after the encoder product. ``!= 0`` keeps NaN codes,
    as ``nonzero`` does, so a diverged step still shows in the loss.
    """
    if codes.device.type != "cpu":
        return codes.view(-1).nonzero().squeeze(1)
    return torch.from_numpy(np.flatnonzero(codes.view(-1).numpy() != 0))


def _sparse_rest(sae, w: dict, x: torch.Tensor, l1_coeff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Products 2-5 over the active codes only: O(nnz x d) work, sums over each row or column in a fixed order.

    The (J, d) products write into buffers (``addmm(..., beta=0, out=)``): ``C^T @ r`` would zero-fill and copy a
    fresh (J, d) result, 0.8 against 0.2 ms at J=8192, with the same numbers.
    """
    B, J, d = x.shape[0], sae.dict_size, sae.d_in
    codes = w["codes"]
    flat = _positive(codes)
    if B * J < 2**31:  # 32-bit indices: what MKL's sparse kernels take natively (int64 ones cost a conversion each)
        flat = flat.to(torch.int32)
    rows = torch.div(flat, J, rounding_mode="floor")
    cols = flat - rows * J
    values = codes.view(-1)[flat]
    C = _csr(_row_pointers(rows, B), cols, values, (B, J))
    mse = _reconstruction_error(sae, w, x, C @ sae.decoder.t())  # 2: (B, d) = C D^T
    d_recon = w["d_recon_ext"][:, :d]
    by_col = torch.argsort(cols, stable=True)  # C^T in CSR: the same entries grouped by feature
    crow_t, rows_t = _row_pointers(cols[by_col], J), rows[by_col]
    grad_dec_t = w["grad_dec_ext"][:, :d]  # (J, d) scratch
    torch.addmm(grad_dec_t, _csr(crow_t, rows_t, values[by_col], (J, B)), d_recon, beta=0, out=grad_dec_t)  # 3: C^T r
    sae.decoder.grad.t().copy_(grad_dec_t)
    # 4: the code gradient at the active entries only, (r D)[b, j] + l1/B; elsewhere the ReLU zeroes it
    seed = _csr(C.crow_indices(), cols, torch.full_like(values, l1_coeff / B), (B, J))
    grad_codes = torch.sparse.sampled_addmm(seed, d_recon, sae.decoder)
    G_t = _csr(crow_t, rows_t, grad_codes.values()[by_col], (J, B))
    grad_enc = w["grad_enc_ext"]
    torch.addmm(grad_enc, G_t, w["x_ext"], beta=0, out=grad_enc)  # 5: (J, d+1); last column: the bias gradient
    sae.encoder.grad.copy_(grad_enc[:, :d])
    sae.encoder_bias.grad.copy_(grad_enc[:, d])
    code_sums = torch.zeros(J, dtype=codes.dtype, device=codes.device).index_add_(0, cols, values)
    return mse, code_sums
