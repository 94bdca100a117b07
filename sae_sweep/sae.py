"""The sparse autoencoder of the replication the note builds on (HoagyC/sparse_coding, June 2023).

    codes  c = ReLU(W_enc x + b_enc)                 (B, dict_size)
    recon  x^ = D c (+ b_dec)                        (B, d_in); D is (d_in, dict_size), unit-norm columns
    loss   = mean((x^ - x)^2) + l1_coeff * mean_batch(||c||_1)

D is the note's dictionary: column j is feature j. ``normalize_decoder_`` restores unit columns after every step.
``fused_grads`` computes the exact gradients of the loss with five matrix products into preallocated buffers, with
no autograd graph; the autograd path (``loss``) is the reference it is tested against, and is used for tied
weights and under DDP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from sae_sweep import ConfigError


@dataclass(frozen=True)
class SAEConfig:
    dict_size: int = 1024  # J, the number of features: the sweep axis
    l1_coeff: float = 1e-3  # alpha of the note
    seed: int = 0  # initialisation; the GPT has its own seed
    data_seed: int | None = None  # activation order; None: the same as seed
    lr: float = 1e-3  # Adam, as the replication
    batch_size: int = 256  # the replication's batch
    epochs: int = 1  # passes over the harvested activations
    decoder_bias: bool = False  # a learned b_dec subtracted before encoding and added back (input centring)
    tied: bool = False  # encoder weight = D^T
    dead_window: int = 1000  # steps without firing before a feature counts as dead
    log_every: int = 50  # steps between metric logs
    ckpt_every: int = 500  # steps between checkpoints

    def __post_init__(self) -> None:
        for name in ("dict_size", "batch_size", "epochs", "dead_window", "log_every", "ckpt_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"sae.{name} must be a positive integer, got {value!r}")
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
        self.encoder = None if cfg.tied else nn.Parameter(decoder.t().clone())  # (dict_size, d_in)
        self.encoder_bias = nn.Parameter(torch.zeros(cfg.dict_size))
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
        return {"loss": mse + l1_coeff * l1, "mse": mse, "l1": l1, "codes": codes, "recon": recon}

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder column to unit norm, in place, and check that it holds."""
        self.decoder /= self.decoder.norm(dim=0, keepdim=True).clamp_min(1e-12)
        norms = self.decoder.norm(dim=0)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
            raise FloatingPointError(f"decoder columns lost unit norm (range {norms.min():.4g}..{norms.max():.4g})")

    def _work_buffers(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (x.shape[0], x.dtype, x.device)
        if self._work_key != key:
            B, J = x.shape[0], self.dict_size
            self._codes = torch.empty(B, J, dtype=x.dtype, device=x.device)
            self._grad_codes = torch.empty(B, J, dtype=x.dtype, device=x.device)
            self._active = torch.empty(B, J, dtype=torch.bool, device=x.device)
            self._work_key = key
        return self._codes, self._grad_codes, self._active

    @torch.no_grad()
    def fused_grads(self, x: torch.Tensor, l1_coeff: float) -> dict[str, torch.Tensor]:
        """Write d(loss)/d(param) into each ``param.grad`` (untied weights) and return the loss's parts.

        Five products of size B x d_in x dict_size, and elementwise passes done in place on reused buffers.
        The L1 term is returned as a lazily summed tensor only when asked, since it costs a pass over the codes.
        """
        if self.tied:
            raise ValueError("fused_grads supports untied weights; use loss() and autograd for tied ones")
        B = x.shape[0]
        codes, grad_codes, active = self._work_buffers(x)
        x_in = x if self.decoder_bias is None else x - self.decoder_bias
        torch.addmm(self.encoder_bias, x_in, self.encoder.t(), out=codes)  # 1: (B, J) pre-activations
        codes.relu_()
        recon = codes @ self.decoder.t()  # 2: (B, d)
        if self.decoder_bias is not None:
            recon += self.decoder_bias
        err = recon.sub_(x)  # (B, d): x^ - x
        mse = err.pow(2).mean()
        d_recon = err.mul_(2.0 / err.numel())  # d mse / d x^
        for p in self.parameters():
            if p.grad is None:
                p.grad = torch.empty_like(p)
        torch.mm(d_recon.t(), codes, out=self.decoder.grad)  # 3: (d, J)
        torch.mm(d_recon, self.decoder, out=grad_codes)  # 4: (B, J)
        grad_codes.add_(l1_coeff / B)  # d(l1 term)/d c, for c >= 0
        torch.gt(codes, 0, out=active)
        grad_codes.mul_(active)  # through the ReLU
        torch.mm(grad_codes.t(), x_in, out=self.encoder.grad)  # 5: (J, d)
        torch.sum(grad_codes, dim=0, out=self.encoder_bias.grad)
        if self.decoder_bias is not None:
            # b_dec enters twice: added to x^, and subtracted from x before encoding.
            torch.sub(d_recon.sum(0), self.encoder_bias.grad @ self.encoder, out=self.decoder_bias.grad)
        return {"mse": mse, "codes": codes}
