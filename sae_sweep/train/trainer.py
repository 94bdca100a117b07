"""One Lightning Trainer for both training stages: step-based, checkpointing atomically, quiet on the console.

``build_trainer`` wires in the pre-emption callbacks (``preemption.py``), the atomic checkpoint IO (``runs.py``), a
rich progress bar over steps on a terminal (elsewhere a progress line every 30 s: ``LogProgress``), and SLURM's
environment when there is one (one requeue path: submitit's).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.plugins.environments import SLURMEnvironment

from sae_sweep.errors import TrainingError
from sae_sweep.train.jobs import TrainerConfig
from sae_sweep.train.preemption import CheckpointBeforeRequeue, CheckpointOnSigterm, ReportResume, fit
from sae_sweep.train.runs import CKPT_DIR, AtomicCheckpointIO

log = logging.getLogger(__name__)

# Lightning notices that are expected here and would only bury the useful lines of a run's output.
warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")  # we checkpoint after steps
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # batches are built in-process


def quiet_lightning() -> None:
    """Keep Lightning's start-up banners (devices found, "try litlogger" tips, the LOCAL_RANK line) off the console:
    its info messages go through these loggers, its warnings and errors still show."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _StepProgressBar(RichProgressBar):
    """Rich progress over steps: runs here are step-based, so Lightning's "Epoch 0/-2" label would only confuse."""

    def _get_train_description(self, current_epoch: int) -> str:
        return "train"

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._first_step = trainer.global_step  # the bar's total is the steps left from here (a resume: fewer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Rich's bar gathers every logged metric at every step, whatever its refresh rate (~0.3 ms a step, a tenth
        # of a sparse SAE step at batch 256): only on the batches it redraws, and the last. It counts optimizer
        # steps, not Lightning batches: an SAE batch holds several steps (sae.steps_per_batch).
        if (batch_idx + 1) % max(self.refresh_rate, 1) == 0 or trainer.global_step >= trainer.max_steps:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, trainer.global_step - self._first_step - 1)


class LogProgress(pl.Callback):
    """Progress where no bar can be seen (the output is not a terminal, or bars are off): a log line every
    ``every_s`` seconds, and so in a log file or a SLURM output too: step, the bar's metrics (loss; FVU and L0),
    steps per second, time left."""

    def __init__(self, name: str, every_s: float = 30.0, clock=time.monotonic) -> None:
        self.name, self.every_s, self.clock = name, every_s, clock

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = self.last = self.clock()
        self.first = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = self.clock()
        if now - self.last < self.every_s or not trainer.is_global_zero:
            return
        self.last = now
        shown = trainer.progress_bar_metrics  # what the bar would show: the GPT's loss, an SAE's FVU and L0
        log.info("%s", self.line(trainer.global_step, trainer.max_steps, shown, now - self.start))

    def line(self, step: int, max_steps: int, metrics: dict, elapsed: float) -> str:
        rate = (step - self.first) / elapsed if elapsed > 0 else 0.0
        left = f"{(max_steps - step) / rate / 60:.1f} min to step {max_steps:,} at most" if rate > 0 else "?"
        shown = "".join(f", {k} {float(v):.4g}" for k, v in metrics.items())
        return f"{self.name}: step {step:,}/{max_steps:,}{shown}, {rate:.1f} steps/s, {left}"


def build_trainer(
    tcfg: TrainerConfig,
    *,
    run_dir: Path,
    max_steps: int,
    loggers: list,
    ckpt_every: int,
    callbacks: tuple = (),
    val_every: int | None = None,
    grad_clip: float | None = None,
    log_every: int | None = None,
) -> pl.Trainer:
    """One Trainer for every stage: step-based, checkpointing atomically to ``run_dir/checkpoints/last.ckpt``."""
    quiet_lightning()
    callbacks = [
        *callbacks,
        ModelCheckpoint(dirpath=run_dir / CKPT_DIR, save_last=True, save_top_k=0, every_n_train_steps=ckpt_every),
        CheckpointOnSigterm(run_dir / CKPT_DIR / "last.ckpt"),
        CheckpointBeforeRequeue(run_dir / CKPT_DIR / "last.ckpt"),
        ReportResume(),
    ]
    bar = tcfg.progress_bar and sys.stderr.isatty()  # a bar in a log file is one frame, written at the end
    if bar:
        callbacks.append(_StepProgressBar(refresh_rate=10, leave=True))  # redraws cost ~0.1 ms each
    else:
        callbacks.append(LogProgress(run_dir.name))
    strategy, plugins = tcfg.strategy, [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        # Requeueing is submitit's job (it catches USR2 and resubmits, once CheckpointBeforeRequeue has written
        # last.ckpt at the step in progress; the rerun resumes there), so Lightning's own USR1 requeue stays off:
        # one requeue path, not two.
        plugins.append(SLURMEnvironment(auto_requeue=False))
        if strategy.startswith("ddp") and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            strategy = "ddp"  # SLURM started one process per device (tasks_per_node = devices): spawn no more
    return pl.Trainer(
        accelerator=tcfg.accelerator,
        devices=tcfg.devices,
        num_nodes=tcfg.num_nodes,
        strategy=strategy,
        precision=tcfg.precision,
        max_steps=max_steps,
        max_epochs=-1,
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
        limit_val_batches=None if val_every else 0,
        num_sanity_val_steps=0,
        gradient_clip_val=grad_clip or None,
        logger=loggers or False,
        log_every_n_steps=log_every or tcfg.log_every_n_steps,
        enable_progress_bar=bar,
        enable_model_summary=False,
        default_root_dir=run_dir,
        plugins=plugins,
        callbacks=callbacks,
    )


def fit_to_end(trainer: pl.Trainer, module: pl.LightningModule, datamodule, ckpt: Path | None, what: str) -> None:
    """Train to ``max_steps`` (from ``ckpt`` when resuming), release the process group, and make sure rank 0 got
    there: a run that stopped early raises TrainingError (rerunning resumes it)."""
    fit(trainer, module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if trainer.is_global_zero and (trainer.interrupted or not trainer.state.finished):  # ddp_spawn: global_step is 0
        raise TrainingError(f"{what} stopped early ({trainer.state.status}); rerun to resume")
