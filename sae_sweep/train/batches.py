"""Shuffled activation batches for SAE training: a float16 .npy file read in chunks, one seeded order per epoch,
several steps' batches stacked into one Lightning batch, and the data module that resumes at a checkpoint's step."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from sae_sweep.errors import ConfigError
from sae_sweep.train.sae import SAEConfig

CHUNK_ROWS = 1 << 18  # float16 -> float32 conversion happens per chunk of this many rows, not per batch


class ActivationBatches(IterableDataset):
    """Batches of a (N, d) float16 .npy file in a seeded random order, one permutation per epoch, as float32.

    Step ``i`` of the run reads global batch ``i``; with ``world`` processes, rank ``r`` takes the r-th slice of
    it. Rows are read and converted in chunks of ~CHUNK_ROWS (sorted reads, one big float16 -> float32 cast), and
    a resumed run starting at step ``start`` yields exactly the batches an uninterrupted run would.

    With ``stack = K > 1`` the consecutive batches of up to K steps come as one (k, batch, d) tensor, so that
    Lightning's per-batch machinery (hooks, fetch, logging: ~2.5 ms) is paid once per K optimizer steps. A stack
    ends where the step count reaches a multiple of K or of any of ``breaks`` (the checkpoint interval), so
    checkpoints land on the same steps whatever K is.
    """

    def __init__(
        self,
        path: str | Path,
        batch_size: int,
        seed: int,
        epochs: int = 1,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        stack: int = 1,
        breaks: tuple[int, ...] = (),
    ) -> None:
        self.path, self.batch_size, self.seed, self.epochs = str(path), batch_size, seed, epochs
        self.start, self.rank, self.world = start, rank, world
        self.stack, self.breaks = stack, tuple(b for b in (stack, *breaks) if b > 1)
        n_rows = np.load(self.path, mmap_mode="r").shape[0]
        self.global_batch = batch_size * world
        self.steps_per_epoch = n_rows // self.global_batch
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"the {n_rows} training activations are fewer than one step's batch of {self.global_batch} "
                f"(sae.batch_size={batch_size} x {world} processes): raise harvest.n_tokens or lower sae.batch_size"
            )
        self.batches_per_chunk = max(1, CHUNK_ROWS // self.global_batch)

    @property
    def n_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def _chunk(self, acts: np.ndarray, perm: np.ndarray, c: int) -> torch.Tensor:
        rows = perm[c * self.batches_per_chunk * self.global_batch :][: self.batches_per_chunk * self.global_batch]
        # Read the rows in file order (sequential on disk), put them back in the permuted order while still float16
        # (half the bytes of a float32 scatter), then cast once. The rows of a permutation are distinct, so any sort
        # (numpy's default is 3x faster than its stable one here) gives the same order.
        order = np.argsort(rows)  # (n,) sorted position -> place in the chunk
        where = np.empty_like(order)
        where[order] = np.arange(order.size)  # (n,) place in the chunk -> sorted position
        return torch.from_numpy(acts[rows[order]][where]).float()

    def __iter__(self):
        if self.stack == 1:
            yield from self._batches()
            return
        group: list[torch.Tensor] = []
        for step, batch in enumerate(self._batches(), start=self.start + 1):  # step: steps done after this batch
            group.append(batch)
            if step == self.n_steps or any(step % b == 0 for b in self.breaks):
                yield _stacked(group)  # (k, batch, d), k <= stack
                group = []

    def _batches(self):
        acts = np.load(self.path, mmap_mode="r")
        epoch, chunk, perm, block = None, None, None, None
        for step in range(self.start, self.n_steps):
            e, within = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, chunk = e, None
                perm = np.random.default_rng([self.seed, e]).permutation(acts.shape[0])
            c, b = divmod(within, self.batches_per_chunk)
            if c != chunk:
                chunk, block = c, self._chunk(acts, perm, c)
            lo = (b * self.world + self.rank) * self.batch_size
            yield block[lo : lo + self.batch_size]


def _stacked(batches: list[torch.Tensor]) -> torch.Tensor:
    """(k, batch, d) from k (batch, d) batches: a view when they lie one after another in one block (one process),
    a copy otherwise (a stack across two chunks, or one rank's slices of several global batches)."""
    first, (k, (B, d)) = batches[0], (len(batches), batches[0].shape)
    step = B * d * first.element_size()
    if all(b.untyped_storage().data_ptr() == first.untyped_storage().data_ptr() for b in batches) and all(
        b.data_ptr() == first.data_ptr() + i * step for i, b in enumerate(batches)
    ):
        return first.as_strided((k, B, d), (B * d, d, 1))
    return torch.stack(batches)


class ActivationDataModule(pl.LightningDataModule):
    def __init__(self, path: Path, cfg: SAEConfig) -> None:
        super().__init__()
        self.path, self.cfg = path, cfg

    def dataset(self, start: int = 0, rank: int = 0, world: int = 1) -> ActivationBatches:
        cfg = self.cfg
        return ActivationBatches(
            self.path, cfg.batch_size, cfg.order_seed, cfg.epochs, start=start, rank=rank, world=world,
            # DDP syncs gradients once per forward of its wrapped module: one step per Lightning batch there
            stack=cfg.steps_per_batch if world == 1 else 1, breaks=(cfg.ckpt_every,),
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        t = self.trainer  # restored from the checkpoint by now, so global_step is where a killed run stopped
        return DataLoader(self.dataset(t.global_step, t.global_rank, t.world_size), batch_size=None)
