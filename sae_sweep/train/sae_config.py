"""The SAE's settings (the ``sae`` config group): what conf/sae/default.yaml becomes, each value checked on creation.

The replication's defaults (HoagyC/sparse_coding run.py: Adam 1e-3, batch 256, L1 1e-3, nn.Linear's encoder start),
the stopping rule, the hand-written step's options and the architecture (archs.py) with its hyper-parameters.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from sae_sweep import rules
from sae_sweep.errors import ConfigError
from sae_sweep.train.archs import ARCHITECTURES, architecture
from sae_sweep.train.sae_step import SPARSE_MAX_DENSITY, STEPS

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
    # The architecture (archs.py: each names the keys below it reads): relu (the note's), topk, batchtopk or jumprelu
    arch: str = "relu"
    k: int = 20  # topk: codes per input; batchtopk: k x batch codes per batch (20: the demo's ReLU L0 is 16-23)
    aux_k: int = 64  # topk, batchtopk: AuxK's dead features per input (Gao et al.: d_in / 2); 0: no AuxK
    aux_coeff: float = 1 / 32  # topk, batchtopk: AuxK's weight (Gao et al.'s alpha)
    threshold_rate: float = 0.01  # batchtopk: weight of each batch's smallest kept code in the running threshold
    l0_coeff: float = 1e-3  # jumprelu: lambda, the weight of mean_b ||c||_0 (see conf/sae/default.yaml on its scale)
    bandwidth: float = 1e-3  # jumprelu: epsilon, the pseudo-derivatives' kernel width (the paper's 0.001)
    threshold_init: float = 1e-3  # jumprelu: every feature's initial threshold (the paper's 0.001)
    tag: str = ""  # a name for a setting the name does not otherwise show (a budget, say): sae-L2-J1024-s0-<tag>

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"sae.init must be one of {INITS}, got {self.init!r}")
        if self.step not in STEPS:
            raise ConfigError(f"sae.step must be one of {STEPS}, got {self.step!r}")
        if not 0 <= self.sparse_max_density <= 1:
            raise ConfigError(f"sae.sparse_max_density must be in [0, 1], got {self.sparse_max_density!r}")
        self._check_arch()
        if self.tag and not re.fullmatch(r"[a-z0-9][a-z0-9.]*", self.tag):
            raise ConfigError(
                f"sae.tag must be lower-case letters, digits and dots (it goes into dictionary names), got {self.tag!r}"
            )
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
        for name in ("seed", "data_seed"):  # torch's and numpy's seeds: a negative one fails inside training
            value = getattr(self, name)
            if value is not None and not 0 <= value < 2**63:
                raise ConfigError(f"sae.{name} must be an integer in [0, 2^63), got {value!r}")
        if not self.l1_coeff >= 0:  # also refuses NaN
            raise ConfigError(f"sae.l1_coeff must be >= 0, got {self.l1_coeff!r}")
        if not self.lr > 0:
            raise ConfigError(f"sae.lr must be > 0, got {self.lr!r}")
        for name in ("l1_coeff", "lr"):
            if getattr(self, name) == math.inf:  # an infinite loss or step diverges at once
                raise ConfigError(f"sae.{name} must be finite, got inf")
        rules.enforce(rules.View({"sae": self}), at="section")  # what a value means beside another (rules.py)

    def _check_arch(self) -> None:
        """Every architecture's hyper-parameters (a bad ``sae.k`` is refused whatever ``sae.arch`` is); what the chosen
        one cannot train with is a rule of rules.py (``arch_resamples``, ``arch_params``)."""
        architecture(self)  # an unknown sae.arch first
        for cls in ARCHITECTURES.values():
            cls.check_params(self)

    @property
    def arch_resamples(self) -> bool:
        """Whether ``sae.resample_every`` (dead-feature resampling) applies to this architecture."""
        return architecture(self).resampling

    @property
    def arch_params(self) -> tuple[str, ...]:
        """The ``sae.*`` hyper-parameters this architecture reads beyond the shared ones ("k" for topk)."""
        return architecture(self).params

    @property
    def arch_suffix(self) -> str:
        """The architecture's part of a dictionary name: "" for relu, "topk-k20", "jumprelu-l0-0.001"..."""
        return architecture(self).suffix

    @property
    def sparsity_label(self) -> str:
        """What sets the sparsity, for logs: "l1 0.001", "topk k=20", "jumprelu l0 1.5e-05"."""
        return architecture(self).label

    @property
    def order_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    def to_dict(self) -> dict:
        return asdict(self)
