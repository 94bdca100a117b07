"""The sparse autoencoder of the replication the note builds on (HoagyC/sparse_coding, June 2023).

    codes  c = ReLU(W_enc x + b_enc)                 (B, dict_size)
    recon  x^ = D c (+ b_dec)                        (B, d_in); D is (d_in, dict_size), unit-norm columns
    loss   = mean((x^ - x)^2) + l1_coeff * mean_batch(||c||_1)

D is the note's dictionary: column j is feature j, initialised orthogonal; the encoder starts as the replication's
(``nn.Linear``'s default, independent of D) or, with ``init=transpose``, as D^T. ``normalize_decoder_`` restores
unit columns after every step.
``fused_grads`` computes the exact gradients of the loss with five matrix products into preallocated buffers, with
no autograd graph; the autograd path (``loss``) is the reference it is tested against, and is used for tied
weights and under DDP. ``resample_`` re-initialises dead features (Towards Monosemanticity's resampling).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from sae_sweep.errors import ConfigError

INITS = ("linear", "transpose")
UNTILS = ("converged", "budget")


@dataclass(frozen=True)
class SAEConfig:
    dict_size: int = 1024  # J, the number of features: the sweep axis
    l1_coeff: float = 1e-3  # alpha of the note
    seed: int = 0  # initialisation; the GPT has its own seed
    data_seed: int | None = None  # activation order; None: the same as seed
    init: str = "linear"  # linear: the replication's encoder, a default nn.Linear (weight and bias U(+-1/sqrt(d_in)),
    #                       independent of the decoder); transpose: encoder = D^T with zero bias (a control)
    lr: float = 1e-3  # Adam, as the replication
    batch_size: int = 256  # the replication's batch
    epochs: int = 4  # passes over the harvested activations: the cap (until=converged) or the budget (until=budget)
    until: str = "converged"  # converged: stop once the held-out loss and the decoder have settled; budget: all epochs
    eval_every: int = 250  # steps between held-out evaluations (loss, FVU, L0, dead, decoder drift)
    eval_rows: int = 4096  # held-out activations each evaluation uses (the first rows of the validation split)
    window: int = 4  # evaluations over which the best held-out loss must gain less than loss_tol
    loss_tol: float = 2e-3  # relative gain of the best held-out loss over the window that counts as settled
    drift_tol: float = 0.02  # mean 1 - cos of the live decoder columns between evaluations that counts as settled
    decoder_bias: bool = False  # a learned b_dec subtracted before encoding and added back (input centring)
    tied: bool = False  # encoder weight = D^T
    dead_window: int = 1000  # steps without firing before a feature counts as dead
    log_every: int = 50  # steps between metric logs
    ckpt_every: int = 500  # steps between checkpoints
    resample_every: int = 0  # steps between dead-feature resamplings (a control of issue 6); 0: never

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"sae.init must be one of {INITS}, got {self.init!r}")
        if self.until not in UNTILS:
            raise ConfigError(f"sae.until must be one of {UNTILS}, got {self.until!r}")
        for name in ("loss_tol", "drift_tol"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"sae.{name} must be >= 0, got {getattr(self, name)!r}")
        names = ("dict_size", "batch_size", "epochs", "dead_window", "log_every", "ckpt_every", "eval_every")
        for name in (*names, "eval_rows", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"sae.{name} must be a positive integer, got {value!r}")
        if isinstance(self.resample_every, bool) or not isinstance(self.resample_every, int) or self.resample_every < 0:
            raise ConfigError(
                f"sae.resample_every must be 0 (off) or a positive number of steps, got {self.resample_every!r}"
            )
        if self.resample_every and self.tied:
            raise ConfigError(
                "sae.resample_every > 0 needs untied weights: a tied encoder row is its unit decoder column, so it "
                "cannot take the resampling rule's 0.2 x live-row norm. Set sae.tied=false or sae.resample_every=0."
            )
        if not self.l1_coeff >= 0:  # also refuses NaN
            raise ConfigError(f"sae.l1_coeff must be >= 0, got {self.l1_coeff!r}")
        if not self.lr > 0:
            raise ConfigError(f"sae.lr must be > 0, got {self.lr!r}")

    @property
    def order_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    def to_dict(self) -> dict:
        return asdict(self)


class SparseAutoencoder(nn.Module):
    def __init__(self, d_in: int, cfg: SAEConfig) -> None:
        super().__init__()
        if isinstance(d_in, bool) or not isinstance(d_in, int) or d_in < 1:
            raise ConfigError(f"the activation width d_in must be a positive integer, got {d_in!r}")
        self.d_in, self.dict_size, self.tied = d_in, cfg.dict_size, cfg.tied
        gen = torch.Generator().manual_seed(cfg.seed)
        decoder = torch.empty(d_in, cfg.dict_size)
        nn.init.orthogonal_(decoder, generator=gen)  # orthonormal rows (or columns when dict_size <= d_in)
        decoder /= decoder.norm(dim=0, keepdim=True)
        self.decoder = nn.Parameter(decoder)  # (d_in, dict_size): the note's D
        if cfg.init == "linear":  # nn.Linear(d_in, dict_size)'s default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(d_in))
            bound = 1 / d_in**0.5
            encoder = torch.empty(cfg.dict_size, d_in).uniform_(-bound, bound, generator=gen)  # (dict_size, d_in)
            bias = torch.empty(cfg.dict_size).uniform_(-bound, bound, generator=gen)
        else:
            encoder, bias = decoder.t().clone(), torch.zeros(cfg.dict_size)
        self.encoder = None if cfg.tied else nn.Parameter(encoder)
        self.encoder_bias = nn.Parameter(bias)
        self.decoder_bias = nn.Parameter(torch.zeros(d_in)) if cfg.decoder_bias else None
        self.register_buffer("decoder_init", decoder.clone(), persistent=False)
        self._work_key: tuple | None = None

    @property
    def W_enc(self) -> torch.Tensor:
        return self.decoder.t() if self.tied else self.encoder  # (dict_size, d_in)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_in) -> non-negative codes (B, dict_size)."""
        if x.shape[-1] != self.d_in:
            raise ConfigError(f"activations have width {x.shape[-1]}, but this SAE takes d_in={self.d_in}")
        if self.decoder_bias is not None:
            x = x - self.decoder_bias
        return torch.relu(torch.addmm(self.encoder_bias, x, self.W_enc.t()))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, dict_size) -> reconstruction (B, d_in)."""
        recon = codes @ self.decoder.t()
        return recon if self.decoder_bias is None else recon + self.decoder_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.encode(x)
        return self.decode(codes), codes

    def loss(self, x: torch.Tensor, l1_coeff: float) -> dict[str, torch.Tensor]:
        """The training loss and its parts, through autograd."""
        recon, codes = self(x)
        mse = (recon - x).pow(2).mean()
        l1 = codes.abs().sum(dim=1).mean()
        return {
            "loss": mse + l1_coeff * l1,
            "mse": mse,
            "l1": l1,
            "codes": codes,
            "recon": recon,
            "code_sums": codes.detach().sum(dim=0),
        }

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder column to unit norm, in place, and check that it holds."""
        self.decoder /= self.decoder.norm(dim=0, keepdim=True).clamp_min(1e-12)
        norms = self.decoder.norm(dim=0)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
            raise FloatingPointError(f"decoder columns lost unit norm (range {norms.min():.4g}..{norms.max():.4g})")

    @torch.no_grad()
    def resample_(self, dead: torch.Tensor, x: torch.Tensor, generator: torch.Generator) -> int:
        """Re-initialise the ``dead`` features ((dict_size,) bool) from inputs of the batch ``x`` (B, d_in), in place.

        Towards Monosemanticity's rule: each dead feature draws one input (with replacement) with probability
        proportional to its squared reconstruction error under the current weights. Its decoder column becomes that
        input's unit direction u (x - b_dec: the space the features reconstruct), its encoder row 0.2 x (the mean
        encoder-row norm of the live features) x u, its encoder bias 0. The input rather than the residual x - x^:
        the new feature is then sure to fire on the input it was made from (pre-activation 0.2 m ||x - b_dec|| > 0),
        and it starts as a direction of the data, as in the paper. Live features are left bit-for-bit as they were.
        ``generator`` (CPU) makes the one random draw. Returns the number of features resampled.
        """
        if self.tied:
            raise ConfigError("resample_ needs untied weights (a tied encoder row cannot be scaled apart from D)")
        idx = dead.nonzero().squeeze(1)  # (n,)
        if idx.numel() == 0:
            return 0
        centred = x if self.decoder_bias is None else x - self.decoder_bias  # (B, d)
        norms = centred.norm(dim=1)  # (B,)
        weights = (self(x)[0] - x).pow(2).sum(dim=1) * (norms > 0)  # (B,) squared error; a zero input has no direction
        if not weights.sum() > 0:  # every input reconstructed exactly: draw uniformly among the non-zero ones
            weights = (norms > 0).to(weights.dtype)
            if not weights.sum() > 0:
                return 0
        pick = torch.multinomial(weights.double().cpu(), idx.numel(), replacement=True, generator=generator)
        pick = pick.to(x.device)
        u = centred[pick] / norms[pick, None]  # (n, d) unit directions
        row_norms = self.encoder.norm(dim=1)  # (J,)
        live = row_norms[~dead]
        scale = 0.2 * (live.mean() if live.numel() else row_norms.mean())  # all dead: the mean of all rows
        self.decoder[:, idx] = u.t().to(self.decoder.dtype)
        self.encoder[idx] = (scale * u).to(self.encoder.dtype)
        self.encoder_bias[idx] = 0.0
        return idx.numel()

    def _work_buffers(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Buffers reused across steps of one batch shape; inputs get a column of ones (see fused_grads)."""
        key = (x.shape[0], x.dtype, x.device)
        if self._work_key != key:
            B, J, d = x.shape[0], self.dict_size, self.d_in
            new = lambda *shape: torch.empty(*shape, dtype=x.dtype, device=x.device)  # noqa: E731
            self._work = {
                "codes": new(B, J),
                "grad_codes": new(B, J),
                "x_ext": new(B, d + 1),  # [x, 1]
                "d_recon_ext": new(B, d + 1),  # [d loss / d recon, 1]
                "grad_dec_ext": new(d + 1, J),
                "grad_enc_ext": new(J, d + 1),
                "enc_ext": new(J, d + 1),  # [W_enc, b_enc]
                "dec_ext": new(d + 1, J),  # [D^T ; l1 / B]
            }
            self._work["x_ext"][:, d] = 1.0
            self._work["d_recon_ext"][:, d] = 1.0
            self._work_key = key
        return self._work

    @torch.no_grad()
    def fused_grads(self, x: torch.Tensor, l1_coeff: float) -> dict[str, torch.Tensor]:
        """Write d(loss)/d(param) into each ``param.grad`` (untied weights) and return the loss's parts.

        The five products of size B x d_in x dict_size a step needs, and only two elementwise passes over the
        (B, dict_size) codes (ReLU, and the ReLU's backward fused with the gradient mask), all on reused buffers.
        A column of ones appended to the (B, d) inputs makes the products carry the rest for free: the encoder
        bias and the L1 gradient are added inside products 1 and 4 (no broadcast pass), and products 3 and 5 also
        return each feature's total code (``code_sums``: the L1 term, and which features fired) and the encoder
        bias gradient (no reduction pass). The returned tensors are views of buffers the next call overwrites.
        """
        if self.tied:
            raise ConfigError("fused_grads supports untied weights; use loss() and autograd for tied ones")
        B, d = x.shape[0], self.d_in
        w = self._work_buffers(x)
        codes, grad_codes = w["codes"], w["grad_codes"]
        x_in, d_recon = w["x_ext"][:, :d], w["d_recon_ext"][:, :d]
        torch.sub(x, self.decoder_bias, out=x_in) if self.decoder_bias is not None else x_in.copy_(x)
        w["enc_ext"][:, :d].copy_(self.encoder)
        w["enc_ext"][:, d].copy_(self.encoder_bias)
        torch.mm(w["x_ext"], w["enc_ext"].t(), out=codes)  # 1: (B, J) pre-activations, bias via the ones column
        codes.relu_()
        recon = codes @ self.decoder.t()  # 2: (B, d)
        if self.decoder_bias is not None:
            recon += self.decoder_bias
        torch.sub(recon, x, out=d_recon)  # x^ - x
        mse = d_recon.pow(2).mean()
        d_recon.mul_(2.0 / d_recon.numel())  # d mse / d x^
        for p in self.parameters():
            if p.grad is None:
                p.grad = torch.empty_like(p)
        torch.mm(w["d_recon_ext"].t(), codes, out=w["grad_dec_ext"])  # 3: (d+1, J); last row: codes.sum(0)
        self.decoder.grad.copy_(w["grad_dec_ext"][:d])
        w["dec_ext"][:d].copy_(self.decoder)
        w["dec_ext"][d].fill_(l1_coeff / B)  # d(l1 term)/d c for c >= 0, added via the ones column
        torch.mm(w["d_recon_ext"], w["dec_ext"], out=grad_codes)  # 4: (B, J)
        torch.ops.aten.threshold_backward.grad_input(grad_codes, codes, 0.0, grad_input=grad_codes)  # ReLU'
        torch.mm(grad_codes.t(), w["x_ext"], out=w["grad_enc_ext"])  # 5: (J, d+1); last column: bias grad
        self.encoder.grad.copy_(w["grad_enc_ext"][:, :d])
        self.encoder_bias.grad.copy_(w["grad_enc_ext"][:, d])
        if self.decoder_bias is not None:
            # b_dec enters twice: added to x^, and subtracted from x before encoding.
            torch.sub(d_recon.sum(0), self.encoder_bias.grad @ self.encoder, out=self.decoder_bias.grad)
        return {"mse": mse, "codes": codes, "code_sums": w["grad_dec_ext"][d]}
