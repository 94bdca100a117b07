"""The GPT's Lightning side: nanoGPT's optimizer recipe, random token windows as batches, the training step.

The model itself is ``gpt.py`` (a plain nn.Module); nothing here is needed to use a trained one.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from sae_sweep.train.gpt import GPT, GPTConfig
from sae_sweep.train.jobs import PretrainConfig


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
