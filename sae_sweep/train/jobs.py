"""What a training command asks for, as plain dataclasses: the two stages' jobs, pretraining's recipe and the
trainer's settings.

They import no Lightning (the stages do), so that ``config.py`` builds and checks a command line's job, and a bad
value is refused in about a second, before Lightning loads (``tests/test_layout.py`` holds it to that).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sae_sweep import rules
from sae_sweep.dictionary import dictionary_name
from sae_sweep.errors import ConfigError
from sae_sweep.store import Paths
from sae_sweep.tracking import LoggerConfig
from sae_sweep.train.archs import architecture
from sae_sweep.train.corpus import DataConfig
from sae_sweep.train.gpt import GPTConfig
from sae_sweep.train.harvest import HarvestConfig
from sae_sweep.train.sae_config import SAEConfig
from sae_sweep.truth import SyntheticConfig

# ------------------------------------------------------------------------------------------ the trainer

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true")


@dataclass(frozen=True)
class TrainerConfig:
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # ddp_spawn locally: plain ddp re-launches the script (and so the whole sweep)
    precision: str = "32-true"  # bf16-mixed on GPUs that have it; CPU bf16 autocast is slower here
    compile: bool = False  # torch.compile: slow to start, and a 32-wide model has little to fuse
    log_every_n_steps: int = 10
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(f"trainer.accelerator must be one of {ACCELERATORS}, got {self.accelerator!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"trainer.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if str(self.precision) not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("devices", "num_nodes", "log_every_n_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"trainer.{name} must be a positive integer, got {value!r}")


# ------------------------------------------------------------------------------------------ pretraining


@dataclass(frozen=True)
class PretrainConfig:
    """nanoGPT's optimizer recipe, sized so the default trains on 2 CPU cores in a few minutes."""

    seed: int = 0  # the GPT's seed: init and batch order. SAE seeds are separate and never retrain it
    batch_size: int = 32  # sequences per step (per device): 32 x 256 = 8192 tokens
    max_steps: int = 800
    # nanoGPT's 6e-4 is GPT-2 small's; this 32-wide model learns faster at a higher peak (measured at 800 steps:
    # validation loss 5.33 at 6e-4, 4.35 at 2e-3, about what 3x the steps at 6e-4 reaches)
    lr: float = 2e-3
    min_lr: float = 2e-4  # cosine floor: lr / 10, as nanoGPT
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    val_every: int = 100  # steps between validation passes
    val_batches: int = 20  # fixed validation batches, the same at every pass
    ckpt_every: int = 100  # steps between checkpoints (last.ckpt, written atomically)
    # A name for a GPT that is not the default one (a longer-trained one, say): gpt-<corpus>-s<seed>-<tag>. SAEs on
    # it are a variant (sae-L2-J1024-s0-gpt-<tag>), and the default gpt= of an SAE sweep skips it.
    tag: str = ""

    def __post_init__(self) -> None:
        if self.tag and not re.fullmatch(r"[a-z0-9][a-z0-9.]*", self.tag):
            raise ConfigError(
                f"pretrain.tag must be lower-case letters, digits and dots (it goes into artifact names), "
                f"got {self.tag!r}"
            )
        for name in ("batch_size", "max_steps", "val_every", "val_batches", "ckpt_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"pretrain.{name} must be a positive integer, got {value!r}")
        if not 0 <= self.seed < 2**63:  # numpy's and torch's seeds
            raise ConfigError(f"pretrain.seed must be an integer in [0, 2^63), got {self.seed!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"pretrain.warmup_steps must be >= 0, got {self.warmup_steps!r}")
        for name in ("lr", "min_lr"):
            if not 0 < getattr(self, name) < math.inf:  # also refuses NaN
                raise ConfigError(f"pretrain.{name} must be a finite number > 0, got {getattr(self, name)!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"pretrain.{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("weight_decay", "grad_clip"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"pretrain.{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        rules.enforce(rules.View({"pretrain": self}), at="section")  # warmup_steps against max_steps, min_lr and lr

    def lr_at(self, step: int) -> float:
        """Linear warm-up to lr, then cosine decay to min_lr at max_steps (nanoGPT's get_lr)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / (self.warmup_steps + 1)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)


@dataclass(frozen=True)
class PretrainJob:
    data: DataConfig
    model: GPTConfig
    pretrain: PretrainConfig
    trainer: TrainerConfig
    logger: LoggerConfig
    paths: Paths
    ckpt_path: str | None = "last"  # "last": resume this run's last.ckpt if any; a path: that file; None: start over
    force: bool = False  # train a new version even if this exact run has finished
    ready_made: bool = True  # install the GPT shipped with sae-sweep when it is this run's product (ready_made.py)

    @property
    def base_name(self) -> str:
        return f"gpt-{self.data.corpus}-s{self.pretrain.seed}"

    @property
    def name(self) -> str:
        return f"{self.base_name}-{self.pretrain.tag}" if self.pretrain.tag else self.base_name

    @property
    def untrained_name(self) -> str:  # the same initialisation whatever the tag: one control GPT
        return f"{self.base_name}-untrained"


# ------------------------------------------------------------------------------------------ an SAE

UNTRAINED = "untrained"  # gpt=untrained: the control GPT, never trained
DEFAULT_L1 = SAEConfig().l1_coeff  # a dictionary trained at another l1_coeff says so in its name
DEFAULT_INIT = SAEConfig().init  # and one started from another initialisation


@dataclass(frozen=True)
class SAEJob:
    harvest: HarvestConfig
    sae: SAEConfig
    trainer: TrainerConfig
    logger: LoggerConfig
    paths: Paths
    gpt: str | None = None  # a model artifact (name, name:vN or folder); None: the newest trained one; "untrained"
    ckpt_path: str | None = "last"
    force: bool = False
    synthetic: SyntheticConfig | None = None  # data=synthetic: generated activations with known features, no GPT
    untrained: PretrainJob | None = None  # gpt=untrained: the corpus, model and seed pretraining would start from
    gpt_tag: str = ""  # the GPT's pretrain.tag, read from its artifact once resolved: SAEs on it are a variant

    @property
    def variant(self) -> str:
        """What sets this job apart from the note's sweep, as a name suffix: "", "untrained", "resample-l1-0.003"..."""
        parts = [f"gpt-{self.gpt_tag}"] if self.gpt_tag else []
        if self.synthetic is not None:
            parts.append(self.synthetic.variant)
        if self.gpt == UNTRAINED:
            parts.append(UNTRAINED)
        if self.sae.arch_suffix:
            parts.append(self.sae.arch_suffix)  # "topk-k20": an architecture other than the note's ReLU + L1
        if self.sae.init != DEFAULT_INIT:
            parts.append(f"init-{self.sae.init}")
        if self.sae.resample_every > 0:
            parts.append("resample")
        if self.sae.l1_coeff != DEFAULT_L1 and "l1_coeff" in architecture(self.sae).params:  # ReLU's, not TopK's
            parts.append(f"l1-{self.sae.l1_coeff:g}")
        if self.sae.tag:
            parts.append(self.sae.tag)  # "onepass": what the user names (experiment=architectures' equal budgets)
        return "-".join(parts)

    @property
    def name(self) -> str:
        return dictionary_name(self.harvest.layer, self.sae.dict_size, self.sae.seed, self.variant)

    @property
    def world(self) -> int:
        """Processes training the one SAE (each takes its slice of every batch)."""
        return self.trainer.devices * self.trainer.num_nodes

    @property
    def group(self) -> str:
        """The W&B group: the jobs of one size and variant, across seeds."""
        return f"sae-L{self.harvest.layer}-J{self.sae.dict_size}" + (f"-{self.variant}" if self.variant else "")
