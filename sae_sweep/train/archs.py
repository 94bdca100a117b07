"""SAE architectures (``sae.arch``), one object each: how pre-activations become codes, what each adds to the loss,
the tensors it adds to a dictionary, how SAELens names it, and which ``sae.*`` hyper-parameters it reads.

With pre = W_enc (x - b_dec) + b_enc, shape (B, J)::

    relu       c = ReLU(pre); loss = mse + l1_coeff * mean_b ||c||_1             the note's (HoagyC/sparse_coding)
    topk       c = ReLU(pre) on each row's k largest pre-activations, 0 elsewhere; loss = mse + aux_coeff * AuxK
               (Gao et al. 2024, "Scaling and evaluating sparse autoencoders")
    batchtopk  training: the k x B largest ReLU(pre) of the whole batch; inference: c = pre * [pre > theta], theta the
               running average of each training batch's smallest kept code (Bussmann et al. 2024)
    jumprelu   c = pre * H(pre - theta_j), theta = exp(log_threshold) learned per feature; loss = mse + l0_coeff *
               mean_b ||c||_0, theta trained through the paper's straight-through pseudo-derivatives with a
               rectangle kernel of width ``bandwidth`` (Rajamanoharan et al. 2024, "Jumping Ahead")

AuxK (topk, batchtopk; ``aux_k = 0`` turns it off) adds aux_coeff x mean((e^ - e)^2), e^ the dead features'
reconstruction of the residual e (sparse_ops.aux_reconstruction), so dead features get a gradient toward what the
live ones miss. The kernels (exact selections, straight-through functions, entry-wise decodes) are sparse_ops.py's.

``architecture(cfg)`` is chosen once, from ``sae.arch``, by the SAE it trains (``SparseAutoencoder.architecture``);
everything else asks that object. The hyper-parameters stay flat ``sae.*`` keys (SAEConfig's fields, in the order
config.json records them); each architecture names the ones it reads (``params``) and checks them (``check_params``,
run for every architecture on every config, so a bad value is refused whatever ``sae.arch`` is). A new architecture
is a subclass here, added to ``ARCHITECTURES`` (or given to ``register``), and its line in conf/sae/default.yaml.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from sae_sweep.errors import ConfigError
from sae_sweep.train import sparse_ops as ops
from sae_sweep.train.sae_step import SPARSE_MAX_DENSITY

# Each method takes the SAE it works for (sae.py's SparseAutoencoder, an nn.Module) and each object holds the
# SAEConfig it was made from (``cfg``); neither is imported here, since both modules choose their architecture here.

Loss = dict[str, torch.Tensor]  # loss, mse, l1, codes (B, J), recon (B, d_in), code_sums (J,)


def _positive_int(cfg, name: str, least: int = 1) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"sae.{name} must be a {'non-negative' if least == 0 else 'positive'} integer, got {value!r}")


class Architecture:
    """What every architecture answers; a subclass sets the class attributes and the methods it changes."""

    name: ClassVar[str] = ""  # the sae.arch value
    saelens: ClassVar[str] = ""  # SAELens' architecture that infers as this one does
    params: ClassVar[tuple[str, ...]] = ()  # the sae.* keys it reads beyond the shared ones
    tensors: ClassVar[tuple[str, ...]] = ()  # what it adds to a dictionary's sae.safetensors (its own parameters)
    hand_written: ClassVar[bool] = False  # sae_step.py's exact gradients apply (untied, one process)
    resampling: ClassVar[bool] = False  # sae.resample_every (dead-feature resampling, a control) applies: rules.py
    #                                     refuses it for an architecture without

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    @classmethod
    def check_params(cls, cfg) -> None:
        """ConfigError for a bad value of one of ``params`` (``l1_coeff`` is SAEConfig's own check)."""

    @property
    def suffix(self) -> str:
        """Its part of a dictionary's name: "" for the note's ReLU, "topk-k20", "jumprelu-l0-0.001"..."""
        return self.name

    @property
    def label(self) -> str:
        """What sets the sparsity, for logs: "l1 0.001", "topk k=20", "jumprelu l0 1.5e-05"."""
        return self.name

    def add_to(self, sae: nn.Module) -> None:
        """Register on ``sae`` the parameters and buffers named in ``tensors``."""

    def encode(self, sae: nn.Module, pre: torch.Tensor) -> torch.Tensor:
        """Codes (B, J) at inference from pre-activations (B, J)."""
        raise NotImplementedError

    def loss(self, sae: nn.Module, x: torch.Tensor, l1_coeff: float, dead: torch.Tensor | None) -> Loss:
        """The training loss and its parts through autograd; ``dead`` (J,) bool: AuxK's features."""
        raise NotImplementedError

    def after_step(self, sae: nn.Module, codes: torch.Tensor) -> None:
        """What an optimizer step leaves to do beside the parameters' update (BatchTopK's threshold)."""

    def penalty(self, l1_sum, l0_sum, n: int, l1_coeff: float):
        """The sparsity term of the held-out loss (the training loss without AuxK, which only revives dead features)
        from the codes' summed L1 and L0 over ``n`` rows."""
        return 0.0

    def saelens_config(self) -> dict:
        """cfg.json's architecture and the fields it needs."""
        return {"architecture": self.saelens}

    def saelens_tensors(self, tensors: dict[str, torch.Tensor], dict_size: int) -> dict[str, torch.Tensor]:
        """What SAELens' architecture reads beyond W_enc, b_enc, W_dec and b_dec, from ``tensors`` (sae.safetensors)."""
        return {}


class ReLU(Architecture):
    """The replication's: ReLU codes, an L1 penalty, trained by the hand-written step where it applies."""

    name: ClassVar[str] = "relu"
    saelens: ClassVar[str] = "standard"
    params: ClassVar[tuple[str, ...]] = ("l1_coeff",)
    hand_written: ClassVar[bool] = True
    resampling: ClassVar[bool] = True

    @property
    def suffix(self) -> str:
        return ""  # the note's architecture: no suffix

    @property
    def label(self) -> str:
        return f"l1 {self.cfg.l1_coeff:g}"

    def encode(self, sae: nn.Module, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def loss(self, sae: nn.Module, x: torch.Tensor, l1_coeff: float, dead: torch.Tensor | None) -> Loss:
        recon, codes = sae(x)  # the replication's ops, in its order
        mse = (recon - x).pow(2).mean()
        l1 = codes.abs().sum(dim=1).mean()
        return {"loss": mse + l1_coeff * l1, "mse": mse, "l1": l1, "codes": codes, "recon": recon,
                "code_sums": codes.detach().sum(dim=0)}  # fmt: skip

    def penalty(self, l1_sum, l0_sum, n: int, l1_coeff: float):
        return l1_coeff * l1_sum / n


class _Sparse(Architecture):
    """The architectures whose codes are ~k of J: trained through autograd over the selected entries only."""

    def loss(self, sae: nn.Module, x: torch.Tensor, l1_coeff: float, dead: torch.Tensor | None) -> Loss:
        pre, at = sae.selected(x)
        entries = self.entries(sae, pre, at)
        recon = sae.add_bias(ops.decode_entries(entries, sae.decoder, x.shape[0]))
        mse = (recon - x).pow(2).mean()
        return self.parts(sae, x, entries, recon, mse, self.extra(sae, x, pre, at, recon, dead), tuple(pre.shape))

    @staticmethod
    def parts(sae: nn.Module, x, entries: ops.Entries, recon, mse, extra, shape: tuple[int, int]) -> Loss:
        """The loss's parts from the selected entries (every sum over them) and the term the architecture adds."""
        _, cols, values = entries
        return {
            "loss": mse + extra,
            "mse": mse,
            "l1": values.detach().sum() / x.shape[0],  # codes >= 0
            "codes": ops.to_dense(entries, shape),  # detached: for the metrics
            "recon": recon,
            "code_sums": torch.zeros_like(sae.encoder_bias).index_add_(0, cols, values.detach()),
        }

    def entries(self, sae: nn.Module, pre: torch.Tensor, at: ops.PreAt | None = None) -> ops.Entries:
        """The positive codes as (rows, cols, values) from pre-activations (B, J), as training computes them. ``at``:
        the selected pre-activations with their gradient (``sae.selected``); None: read from ``pre``'s own graph."""
        raise NotImplementedError

    def extra(self, sae: nn.Module, x, pre, at: ops.PreAt, recon, dead: torch.Tensor | None) -> torch.Tensor:
        """What the architecture adds to the reconstruction loss."""
        raise NotImplementedError


class TopK(_Sparse):
    """The sparsity is fixed by k: its held-out loss is the reconstruction alone (``penalty`` 0)."""

    name: ClassVar[str] = "topk"
    saelens: ClassVar[str] = "topk"
    params: ClassVar[tuple[str, ...]] = ("k", "aux_k", "aux_coeff")

    @classmethod
    def check_params(cls, cfg) -> None:
        _positive_int(cfg, "k")
        _positive_int(cfg, "aux_k", least=0)
        if not 0 <= cfg.aux_coeff < math.inf:  # also refuses NaN
            raise ConfigError(f"sae.aux_coeff must be a finite number >= 0, got {cfg.aux_coeff!r}")

    @property
    def suffix(self) -> str:
        return f"{self.name}-k{self.cfg.k}"

    @property
    def label(self) -> str:
        return f"{self.name} k={self.cfg.k}"

    def encode(self, sae: nn.Module, pre: torch.Tensor) -> torch.Tensor:
        return ops.topk_codes(pre, self.cfg.k)

    def select(self, pre: torch.Tensor) -> ops.Index:
        return ops.topk_index(pre, self.cfg.k)

    def entries(self, sae: nn.Module, pre: torch.Tensor, at: ops.PreAt | None = None) -> ops.Entries:
        return ops.relu_entries(self.select(pre.detach()), at or (lambda rows, cols: pre[rows, cols]))

    def extra(self, sae: nn.Module, x, pre, at: ops.PreAt, recon, dead: torch.Tensor | None) -> torch.Tensor:
        """AuxK: aux_coeff x the mse of the dead features' reconstruction of the residual."""
        if dead is None or self.cfg.aux_k == 0 or not bool(dead.any()):
            return torch.zeros((), dtype=x.dtype, device=x.device)
        residual = (x - recon).detach()  # what the live features miss; no gradient through it (Gao et al.)
        aux = ops.aux_reconstruction(pre, at, dead, self.cfg.aux_k, sae.decoder)
        return self.cfg.aux_coeff * (aux - residual).pow(2).mean()

    def saelens_config(self) -> dict:
        return {"architecture": self.saelens, "k": self.cfg.k}


class BatchTopK(TopK):
    name: ClassVar[str] = "batchtopk"
    saelens: ClassVar[str] = "jumprelu"  # it infers as a JumpReLU whose every feature has the one learned threshold
    params: ClassVar[tuple[str, ...]] = ("k", "aux_k", "aux_coeff", "threshold_rate")
    tensors: ClassVar[tuple[str, ...]] = ("threshold",)

    @classmethod
    def check_params(cls, cfg) -> None:
        TopK.check_params(cfg)
        if not 0 < cfg.threshold_rate <= 1:
            raise ConfigError(f"sae.threshold_rate must be in (0, 1], got {cfg.threshold_rate!r}")

    def add_to(self, sae: nn.Module) -> None:
        sae.register_buffer("threshold", torch.zeros(()))  # the inference threshold: 0 until the first batch sets it

    def encode(self, sae: nn.Module, pre: torch.Tensor) -> torch.Tensor:
        return pre * (pre > sae.threshold)

    def select(self, pre: torch.Tensor) -> ops.Index:
        return ops.batchtopk_index(pre, self.cfg.k)

    @torch.no_grad()
    def after_step(self, sae: nn.Module, codes: torch.Tensor) -> None:
        """Move the inference threshold toward this batch's smallest kept code (the first sets it)."""
        low = ops.smallest_kept(codes)
        if low is None:
            return
        rate = 1.0 if float(sae.threshold) == 0 else self.cfg.threshold_rate
        sae.threshold.mul_(1 - rate).add_(rate * low)

    def saelens_config(self) -> dict:
        return {"architecture": self.saelens}

    def saelens_tensors(self, tensors: dict[str, torch.Tensor], dict_size: int) -> dict[str, torch.Tensor]:
        return {"threshold": tensors["threshold"].expand(dict_size).contiguous()}


class JumpReLU(_Sparse):
    name: ClassVar[str] = "jumprelu"
    saelens: ClassVar[str] = "jumprelu"
    params: ClassVar[tuple[str, ...]] = ("l0_coeff", "bandwidth", "threshold_init")
    tensors: ClassVar[tuple[str, ...]] = ("log_threshold",)

    @classmethod
    def check_params(cls, cfg) -> None:
        if not 0 <= cfg.l0_coeff < math.inf:
            raise ConfigError(f"sae.l0_coeff must be a finite number >= 0, got {cfg.l0_coeff!r}")
        for name in ("bandwidth", "threshold_init"):
            if not 0 < getattr(cfg, name) < math.inf:
                raise ConfigError(f"sae.{name} must be a finite number > 0, got {getattr(cfg, name)!r}")

    @property
    def suffix(self) -> str:
        return f"jumprelu-l0-{self.cfg.l0_coeff:g}"

    @property
    def label(self) -> str:
        return f"jumprelu l0 {self.cfg.l0_coeff:g}"

    def add_to(self, sae: nn.Module) -> None:
        # per-feature thresholds, learned in log space (positive, as the paper's)
        sae.log_threshold = nn.Parameter(torch.full((self.cfg.dict_size,), math.log(self.cfg.threshold_init)))

    def encode(self, sae: nn.Module, pre: torch.Tensor) -> torch.Tensor:
        return pre * (pre > sae.log_threshold.exp())

    def entries(self, sae: nn.Module, pre: torch.Tensor, at: ops.PreAt | None = None) -> ops.Entries:
        theta, eps = sae.log_threshold.exp(), self.cfg.bandwidth
        rows, cols = index = ops.jumprelu_index(pre.detach(), theta, eps)
        return ops.jumprelu_entries(index, at(rows, cols) if at else pre[rows, cols], theta, eps)[0]

    def loss(self, sae: nn.Module, x: torch.Tensor, l1_coeff: float, dead: torch.Tensor | None) -> Loss:
        pre, theta, eps = sae.pre_activations(x), sae.log_threshold.exp(), self.cfg.bandwidth  # pre's graph:
        rows, cols = index = ops.jumprelu_index(pre.detach(), theta, eps)
        if rows.numel() > SPARSE_MAX_DENSITY * pre.numel():
            return self._dense_loss(sae, x, pre, theta, eps)  # used only while the codes are dense
        pre, at = sae.selected(x, pre.detach())
        entries, l0_sum = ops.jumprelu_entries(index, at(rows, cols), theta, eps)
        recon = sae.add_bias(ops.decode_entries(entries, sae.decoder, x.shape[0]))
        mse = (recon - x).pow(2).mean()
        extra = self.cfg.l0_coeff * (l0_sum / x.shape[0])  # lambda x mean_b ||c||_0
        return self.parts(sae, x, entries, recon, mse, extra, tuple(pre.shape))

    def _dense_loss(self, sae: nn.Module, x, pre, theta, eps: float) -> Loss:
        """The loss while the codes are dense (early in training): the paper's, every code decoded."""
        codes = ops.jumprelu(pre, theta, eps)  # (B, J)
        recon = sae.add_bias(codes @ sae.decoder.t())
        mse = (recon - x).pow(2).mean()
        l0 = ops.heaviside(pre, theta, eps).sum(dim=1).mean()
        done = codes.detach()
        return {"loss": mse + self.cfg.l0_coeff * l0, "mse": mse, "l1": done.sum() / x.shape[0], "codes": done,
                "recon": recon, "code_sums": done.sum(dim=0)}  # fmt: skip

    def penalty(self, l1_sum, l0_sum, n: int, l1_coeff: float):
        return self.cfg.l0_coeff * l0_sum / n

    def saelens_tensors(self, tensors: dict[str, torch.Tensor], dict_size: int) -> dict[str, torch.Tensor]:
        return {"threshold": tensors["log_threshold"].exp().contiguous()}


ARCHITECTURES: dict[str, type[Architecture]] = {a.name: a for a in (ReLU, TopK, BatchTopK, JumpReLU)}


def register(cls: type[Architecture]) -> type[Architecture]:
    """Add an architecture to ``sae.arch``'s choices (a class decorator); its name must be new."""
    if cls.name in ARCHITECTURES:
        raise ValueError(f"an architecture named {cls.name!r} is already registered")
    ARCHITECTURES[cls.name] = cls
    return cls


def architecture(cfg) -> Architecture:
    """The object for ``cfg.arch``; ConfigError naming the choices for an unknown one."""
    if cfg.arch not in ARCHITECTURES:
        raise ConfigError(f"sae.arch must be one of {tuple(ARCHITECTURES)}, got {cfg.arch!r}")
    return ARCHITECTURES[cfg.arch](cfg)
