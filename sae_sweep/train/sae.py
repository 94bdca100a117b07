"""The sparse autoencoder of the replication the note builds on (HoagyC/sparse_coding, June 2023), and the other
architectures': its ``architecture`` (archs.py), chosen once from ``sae.arch``, makes the codes and the loss.

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

import torch
from torch import nn

from sae_sweep.dictionary import Dictionary
from sae_sweep.errors import ConfigError
from sae_sweep.train import sparse_ops as ops
from sae_sweep.train.archs import architecture
from sae_sweep.train.sae_config import INITS, SAE_PRECISIONS, UNTILS, SAEConfig  # noqa: F401 - the module's API
from sae_sweep.train.sae_step import SPARSE_MAX_DENSITY, step_grads


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
        self.cfg = cfg
        self.architecture = architecture(cfg)  # chosen once from sae.arch (archs.py); everything else asks it
        self.architecture.add_to(self)  # its own parameters and buffers (BatchTopK's threshold, JumpReLU's)

    @property
    def arch(self) -> str:
        return self.architecture.name

    @property
    def W_enc(self) -> torch.Tensor:
        return self.decoder.t() if self.tied else self.encoder  # (dict_size, d_in)

    def _check_width(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.d_in:
            raise ConfigError(f"activations have width {x.shape[-1]}, but this SAE takes d_in={self.d_in}")

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_in) -> W_enc (x - b_dec) + b_enc, (B, dict_size)."""
        self._check_width(x)
        if self.decoder_bias is not None:
            x = x - self.decoder_bias
        return torch.addmm(self.encoder_bias, x, self.W_enc.t())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_in) -> non-negative codes (B, dict_size), as at inference (BatchTopK by its learned threshold)."""
        return self.architecture.encode(self, self.pre_activations(x))

    def selected(self, x: torch.Tensor, pre: torch.Tensor | None = None) -> tuple[torch.Tensor, ops.PreAt]:
        """Pre-activations (B, dict_size) computed without a graph, to select from, and ``at``, their values at the
        selected entries with gradients over those entries only (sparse_ops.pre_at): the sparse architectures."""
        self._check_width(x)
        if self.decoder_bias is not None:
            x = x - self.decoder_bias
        if pre is None:  # else already computed (JumpReLU's, to choose its path)
            with torch.no_grad():
                pre = torch.addmm(self.encoder_bias, x, self.W_enc.t())
        return pre, ops.pre_at(self.W_enc, self.encoder_bias, x, pre)

    def after_step_(self, codes: torch.Tensor) -> None:
        """What an optimizer step leaves to the architecture (BatchTopK moves its inference threshold)."""
        self.architecture.after_step(self, codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, dict_size) -> reconstruction (B, d_in)."""
        return self.add_bias(codes @ self.decoder.t())

    def add_bias(self, recon: torch.Tensor) -> torch.Tensor:
        return recon if self.decoder_bias is None else recon + self.decoder_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.encode(x)
        return self.decode(codes), codes

    def loss(self, x: torch.Tensor, l1_coeff: float, dead: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The training loss and its parts, through autograd; ``dead`` (dict_size,) bool: AuxK's features."""
        return self.architecture.loss(self, x, l1_coeff, dead)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """What a dictionary saves (sae.safetensors), on the CPU: decoder (d_in, J), decoder_init, encoder.bias,
        encoder.weight (untied), decoder_bias (when learned), then the architecture's own tensors."""
        tensors = {
            "decoder": self.decoder.detach().cpu().contiguous(),
            "decoder_init": self.decoder_init.cpu().contiguous(),
            "encoder.bias": self.encoder_bias.detach().cpu().contiguous(),
        }
        if not self.tied:
            tensors["encoder.weight"] = self.encoder.detach().cpu().contiguous()
        if self.decoder_bias is not None:
            tensors["decoder_bias"] = self.decoder_bias.detach().cpu().contiguous()
        for name in self.architecture.tensors:  # batchtopk's threshold (), jumprelu's log_threshold (J,)
            tensors[name] = getattr(self, name).detach().cpu().contiguous()
        return tensors

    @classmethod
    def from_dictionary(cls, d: Dictionary) -> SparseAutoencoder:
        """The module a dictionary was saved from (``state_tensors``), rebuilt on the CPU in eval mode."""
        sae = cls(d.d_in, SAEConfig(**d.config.sae))
        state = {"decoder": d.tensors["decoder"], "encoder_bias": d.tensors["encoder.bias"]}
        if "encoder.weight" in d.tensors:
            state["encoder"] = d.tensors["encoder.weight"]
        if "decoder_bias" in d.tensors:
            state["decoder_bias"] = d.tensors["decoder_bias"]
        state |= {name: d.tensors[name] for name in sae.architecture.tensors}
        sae.load_state_dict(state)
        sae.decoder_init.copy_(d.tensors["decoder_init"])
        return sae.eval()

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
