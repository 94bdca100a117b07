"""The GPT's Lightning side: nanoGPT's optimizer recipe, random token windows as batches, the training step.

The model itself is ``gpt.py`` (a plain nn.Module); nothing here is needed to use a trained one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from sae_sweep import rules
from sae_sweep.errors import ConfigError
from sae_sweep.train.gpt import GPT, GPTConfig


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


class RandomBlocks(IterableDataset):
    """Batches of random (B, T+1) windows of a uint16 token file, as (x, y) int64 pairs.

    Batch ``i`` depends only on (seed, rank, i), so a run resumed at step ``start`` sees exactly the batches an
    uninterrupted run would have. The memmap is opened lazily, so spawned workers share the page cache.
    """

    def __init__(
        self,
        path: str | Path,
        block_size: int,
        batch_size: int,
        seed: int,
        start: int = 0,
        n_batches: int | None = None,
        rank: int = 0,
    ) -> None:
        self.path, self.block_size, self.batch_size = str(path), block_size, batch_size
        self.seed, self.start, self.n_batches, self.rank = seed, start, n_batches, rank
        self._tokens: np.ndarray | None = None

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=np.uint16, mode="r")
        rng = np.random.default_rng([self.seed, self.rank, i])
        starts = rng.integers(0, len(self._tokens) - self.block_size - 1, size=self.batch_size)
        windows = np.stack([self._tokens[s : s + self.block_size + 1] for s in starts]).astype(np.int64)
        t = torch.from_numpy(windows)  # (B, T+1)
        return t[:, :-1], t[:, 1:]

    def __iter__(self):
        i = self.start
        while self.n_batches is None or i < self.start + self.n_batches:
            yield self.batch(i)
            i += 1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokens": None}  # never pickle the memmap's contents


class TokenDataModule(pl.LightningDataModule):
    """Infinite random training windows, resumed at the trainer's step; a fixed set of validation windows."""

    def __init__(self, train_path: Path, val_path: Path, block_size: int, cfg: PretrainConfig) -> None:
        super().__init__()
        self.train_path, self.val_path, self.block_size, self.cfg = train_path, val_path, block_size, cfg

    def train_dataloader(self) -> DataLoader:
        # Called after a checkpoint is restored, so global_step is where the interrupted run stopped.
        ds = RandomBlocks(
            self.train_path,
            self.block_size,
            self.cfg.batch_size,
            self.cfg.seed,
            start=self.trainer.global_step,
            rank=self.trainer.global_rank,
        )
        return DataLoader(ds, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        ds = RandomBlocks(
            self.val_path,
            self.block_size,
            self.cfg.batch_size,
            self.cfg.seed + 1,
            n_batches=self.cfg.val_batches,
            rank=self.trainer.global_rank,
        )
        return DataLoader(ds, batch_size=None)


class GPTModule(pl.LightningModule):
    def __init__(self, model_cfg: GPTConfig, cfg: PretrainConfig, compile: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters({"model": model_cfg.to_dict(), "pretrain": cfg.__dict__})
        self.cfg = cfg
        self.model = GPT(model_cfg)
        self._forward = torch.compile(self.model) if compile else self.model

    def training_step(self, batch, batch_idx):
        x, y = batch
        _, loss = self._forward(x, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/tokens", float((self.global_step + 1) * x.numel() * self.trainer.world_size))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        _, loss = self._forward(x, y)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.model.optimizer_groups(self.cfg.weight_decay),
            lr=self.cfg.lr,
            betas=(self.cfg.beta1, self.cfg.beta2),
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self.cfg.lr_at(step) / self.cfg.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
