"""The sparse autoencoder of the replication the note builds on (HoagyC/sparse_coding, June 2023).

    codes  c = ReLU(W_enc x + b_enc)                 (B, dict_size)
    recon  x^ = D c (+ b_dec)                        (B, d_in); D is (d_in, dict_size), unit-norm columns
    loss   = mean((x^ - x)^2) + l1_coeff * mean_batch(||c||_1)

D is the note's dictionary: column j is feature j, initialised orthogonal; the encoder starts as the replication's
(``nn.Linear``'s default, independent of D) or, with ``init=transpose``, as D^T. ``normalize_decoder_`` restores
unit columns after every step.
``fused_grads`` computes the exact gradients of the loss by hand (``sae_step``: dense products, or sparse ones over
the active codes), with no autograd graph; the autograd path (``loss``) is the reference it is tested against, and
is used for tied weights and under DDP. ``resample_`` re-initialises dead features (Towards Monosemanticity's
resampling).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from sae_sweep.errors import ConfigError
from sae_sweep.train.sae_step import SPARSE_MAX_DENSITY, STEPS, step_grads

INITS = ("linear", "transpose")
UNTILS = ("converged", "budget")
SAE_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


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
    steps_per_batch: int = 8  # optimizer steps per Lightning batch (a stack of that many batches): the same steps,
    #                           with Lightning's per-batch work paid once per stack; SIGTERM acts at a stack's end;
    #                           one process only (under DDP each step is its own batch)
    resample_every: int = 0  # steps between dead-feature resamplings (a control of issue 6); 0: never
    step: str = "auto"  # the hand-written step's path: auto (sparse once codes are sparse), dense, or sparse
    sparse_max_density: float = (
        SPARSE_MAX_DENSITY  # auto: the sparse path when at most this fraction of the codes is positive
    )
    snapshot_first: int = 16384  # activations seen at the first decoder snapshot, then every doubling; 0: none
    precision: str = "32-true"  # the SAE's Lightning precision, whatever trainer.precision says: fp32 as the
    #                             replication (trainer=gpu's bf16-mixed is for pretraining); bf16-mixed is a departure

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"sae.init must be one of {INITS}, got {self.init!r}")
        if self.step not in STEPS:
            raise ConfigError(f"sae.step must be one of {STEPS}, got {self.step!r}")
        if not 0 <= self.sparse_max_density <= 1:
            raise ConfigError(f"sae.sparse_max_density must be in [0, 1], got {self.sparse_max_density!r}")
        if self.precision not in SAE_PRECISIONS:
            raise ConfigError(f"sae.precision must be one of {SAE_PRECISIONS}, got {self.precision!r}")
        if self.until not in UNTILS:
            raise ConfigError(f"sae.until must be one of {UNTILS}, got {self.until!r}")
        for name in ("loss_tol", "drift_tol"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"sae.{name} must be >= 0, got {getattr(self, name)!r}")
        names = ("dict_size", "batch_size", "epochs", "dead_window", "log_every", "ckpt_every", "eval_every")
        for name in (*names, "steps_per_batch", "eval_rows", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"sae.{name} must be a positive integer, got {value!r}")
        if isinstance(self.resample_every, bool) or not isinstance(self.resample_every, int) or self.resample_every < 0:
            raise ConfigError(
                f"sae.resample_every must be 0 (off) or a positive number of steps, got {self.resample_every!r}"
            )
        if isinstance(self.snapshot_first, bool) or not isinstance(self.snapshot_first, int) or self.snapshot_first < 0:
            raise ConfigError(
                f"sae.snapshot_first must be 0 (no snapshots) or a positive number of activations, got "
                f"{self.snapshot_first!r}"
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


@contextlib.contextmanager
def one_thread():
    """Run the block on one torch thread, then restore the count (for the few ops whose bits depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SparseAutoencoder(nn.Module):
    def __init__(self, d_in: int, cfg: SAEConfig) -> None:
        super().__init__()
        if isinstance(d_in, bool) or not isinstance(d_in, int) or d_in < 1:
            raise ConfigError(f"the activation width d_in must be a positive integer, got {d_in!r}")
        self.d_in, self.dict_size, self.tied = d_in, cfg.dict_size, cfg.tied
        gen = torch.Generator().manual_seed(cfg.seed)
        decoder = torch.empty(d_in, cfg.dict_size)
        with one_thread():  # LAPACK's QR splits its sums by thread count: one seed, one D, whatever the job's threads
            nn.init.orthogonal_(decoder, generator=gen)  # orthonormal rows (or columns when dict_size <= d_in)
        decoder /= decoder.norm(dim=0, keepdim=True)
        # (d_in, dict_size): the note's D, stored feature-major (D^T contiguous) so that the sparse step reads and
        # writes whole features; a (d_in, J) layout costs two 1M-element transposed copies per step at J=8192
        self.decoder = nn.Parameter(decoder.t().contiguous().t())
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
        """Rescale every decoder column to unit norm, in place; a zero or non-finite column raises.

        The norms as a sum over the contiguous rows of the (d_in, J) matrix: ``norm(dim=0)`` reduces across the
        strided axis and took 12x longer (0.62 against 0.05 ms at J=1024), a cost paid every step.
        """
        norms = self.decoder.pow(2).sum(dim=0).sqrt_()  # (J,)
        low, high = norms.min().item(), norms.max().item()
        if not (low > 1e-12 and high < float("inf")):  # also False for NaN
            raise FloatingPointError(f"decoder columns cannot be renormalised (norms range {low:.4g}..{high:.4g})")
        self.decoder /= norms

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

    def fused_grads(
        self, x: torch.Tensor, l1_coeff: float, step: str = "auto", max_density: float = SPARSE_MAX_DENSITY
    ) -> dict[str, torch.Tensor]:
        """Write d(loss)/d(param) into each ``param.grad`` (untied weights) and return the loss's parts.

        The hand-written step of ``sae_step``: dense or sparse (``step``, ``auto`` by the codes' density).
        """
        return step_grads(self, x, l1_coeff, step, max_density)
