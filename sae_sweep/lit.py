"""Thin Lightning wrappers: the GPT's training step, its optimizer and schedule, token batches, the Trainer.

The models themselves live in model.py (and sae.py); nothing here is needed to use a trained one.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import signal
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, IterableDataset

from sae_sweep import ConfigError, Interrupted
from sae_sweep.artifacts import LoggerConfig, wandb_host, wandb_reachable
from sae_sweep.model import GPT, GPTConfig
from sae_sweep.runs import CKPT_DIR, AtomicCheckpointIO

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# Lightning notices that are expected here and would only bury the useful lines of a run's output.
warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")  # we checkpoint after steps
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # batches are built in-process

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


@dataclass(frozen=True)
class PretrainConfig:
    """nanoGPT's optimizer recipe, sized so the default trains on 2 CPU cores in a few minutes."""

    seed: int = 0  # the GPT's seed: init and batch order. SAE seeds are separate and never retrain it
    batch_size: int = 32  # sequences per step (per device): 32 x 256 = 8192 tokens
    max_steps: int = 800
    lr: float = 6e-4  # nanoGPT's AdamW defaults
    min_lr: float = 6e-5  # cosine floor: lr / 10, as nanoGPT
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    val_every: int = 100  # steps between validation passes
    val_batches: int = 20  # fixed validation batches, the same at every pass
    ckpt_every: int = 100  # steps between checkpoints (last.ckpt, written atomically)

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "val_every", "val_batches", "ckpt_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"pretrain.{name} must be a positive integer, got {value!r}")
        if self.warmup_steps < 0 or self.warmup_steps >= self.max_steps:
            raise ConfigError(
                f"pretrain.warmup_steps must be in [0, max_steps={self.max_steps}), got {self.warmup_steps!r}"
            )
        if not 0 < self.min_lr <= self.lr:
            raise ConfigError(f"need 0 < pretrain.min_lr <= pretrain.lr, got {self.min_lr!r} and {self.lr!r}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"pretrain.beta1 and beta2 must be in [0, 1), got {self.beta1!r}, {self.beta2!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("pretrain.weight_decay and pretrain.grad_clip must be >= 0")

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


def build_loggers(cfg: LoggerConfig, run_dir: Path, name: str, group: str | None = None) -> list:
    """A CSV logger always; a W&B logger unless logger=none, guarded so that W&B trouble never ends the run."""
    csv_logger = ResumingCSVLogger(run_dir, name="csv", version="")
    loggers: list = [csv_logger]
    if cfg.kind == "wandb":
        offline = cfg.mode == "offline" or os.environ.get("WANDB_MODE", "") in ("offline", "dryrun", "disabled")
        if not offline and not wandb_reachable():
            log.warning(
                "the W&B server (%s) cannot be reached: this run logs offline to %s/wandb and keeps everything "
                "locally; upload it later with `wandb sync`",
                wandb_host(),
                run_dir,
            )
            offline = True
        wandb_logger = GuardedWandbLogger(
            csv_path=Path(csv_logger.log_dir) / "metrics.csv",
            name=name,
            project=cfg.project,
            entity=cfg.entity,
            group=group,
            tags=list(cfg.tags),
            save_dir=str(run_dir),
            offline=offline,
        )
        loggers.append(wandb_logger)
    return loggers


class ResumingCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run keeps the rows its interrupted run wrote before the resume.

    Lightning's deletes metrics.csv when a run starts in a folder that has one, so a job resumed after a kill, a
    SIGTERM or a requeue would keep only the curves from where it resumed. This one keeps every earlier row before the
    first step the resumed run logs (the rows after it are logged again, from the same batches), and writes its rows
    out at every checkpoint, not only every 100 steps.
    """

    @property
    def experiment(self):
        if self._experiment is None and rank_zero_only.rank == 0:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(log_dir=self.log_dir)
        return CSVLogger.experiment.fget(self)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self.save()  # the rows up to each checkpoint reach the disk with it: a resumed run's curves have no gap


class _ResumingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # instead of deleting an earlier metrics.csv, trim it at the first save
        self._earlier = os.path.isfile(self.metrics_file_path)

    def save(self) -> None:
        if self._earlier and self.metrics:
            self._keep_rows_before(min(int(m["step"]) for m in self.metrics))
        super().save()

    def _keep_rows_before(self, step: int) -> None:
        path = Path(self.metrics_file_path)
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = [row for row in reader if row.get("step") and int(float(row["step"])) < step]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        self.metrics_keys, self._earlier = header, False  # the next save appends (or widens the header)


class GuardedWandbLogger(WandbLogger):
    """Lightning's WandbLogger, except that a W&B failure never ends the run.

    The first exception from W&B (its service process gone, a full disk under its run folder, a server error) is
    warned about once, naming the step, where the metrics go on (the CSV beside the run) and how to upload what W&B
    logged before it (``wandb sync``); then W&B is off for the rest of the run. Training, the CSV metrics, the
    checkpoints and the local artifact carry on. ``failure`` says what went wrong (None while W&B works).
    """

    def __init__(self, *args, csv_path: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.csv_path = csv_path
        self.failure: str | None = None
        self.wandb_dir: Path | None = None  # the run's folder, which `wandb sync` uploads
        self._step = 0

    @property
    def experiment(self):
        if self.failure is not None:
            return _WandbOff()
        try:
            run = WandbLogger.experiment.fget(self)
        except Exception as exc:  # noqa: BLE001 - W&B trouble must never end a training run
            self.fail("starting the W&B run", exc)
            return _WandbOff()
        if self.wandb_dir is None and isinstance(getattr(run, "dir", None), str):
            self.wandb_dir = Path(run.dir).parent
        return run

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self._guarded("logging hyperparameters", super().log_hyperparams, params, *args, **kwargs)

    def log_metrics(self, metrics, step: int | None = None) -> None:
        self._step = self._step if step is None else step
        self._guarded("logging metrics", super().log_metrics, metrics, step)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self._guarded("logging a checkpoint", super().after_save_checkpoint, checkpoint_callback)

    def finalize(self, status: str) -> None:
        self._guarded("finalizing", super().finalize, status)

    def _guarded(self, what: str, fn, *args, **kwargs):
        if self.failure is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - W&B trouble must never end a training run
            self.fail(what, exc)
            return None

    def fail(self, what: str, exc: BaseException) -> None:
        """Warn once and switch W&B off for the rest of this run; let go of the broken W&B run."""
        if self.failure is not None:
            return
        self.failure = f"{type(exc).__name__}: {exc}"
        sync = (
            f"to upload what W&B logged before the failure, run `wandb sync {self.wandb_dir}`"
            if self.wandb_dir is not None
            else "nothing reached W&B"
        )
        log.warning(
            "W&B logging failed at step %d while %s (%s); W&B is off for the rest of this run, which goes on: "
            "metrics continue in %s, checkpoints and the artifact are kept locally; %s",
            self._step,
            what,
            self.failure,
            self.csv_path,
            sync,
        )
        _abandon_wandb_run(self._experiment)


class _WandbOff:
    """What ``GuardedWandbLogger.experiment`` gives once W&B is off: every attribute and call is a no-op."""

    def __getattr__(self, name: str):
        return self

    def __call__(self, *args, **kwargs):
        return self


def _abandon_wandb_run(run) -> None:
    """Let go of a broken W&B run, so that it neither fails nor blocks anything later in this process.

    Finish it if it still can be. If not (its service process is gone), tear W&B's session down, which also keeps
    W&B's exit hook from printing a traceback at exit, and stop it being ``wandb.run``, so that a later job in this
    process (a Hydra multirun runs its jobs one after another) starts its own run instead of reusing this one.
    """
    if run is None:
        return
    import wandb  # noqa: PLC0415

    try:
        run.finish(exit_code=1)
        return
    except Exception:  # noqa: BLE001 - already broken: the warning has said all there is to say
        pass
    try:
        wandb.teardown()
    except Exception:  # noqa: BLE001
        pass
    if wandb.run is run:
        try:
            from wandb.sdk.lib import module  # noqa: PLC0415

            module.unset_globals()
        except Exception:  # noqa: BLE001
            wandb.run = None


class CheckpointOnSigterm(pl.Callback):
    """On SIGTERM, finish the current step, write last.ckpt, and stop with ``Interrupted``.

    Lightning notes the signal (``trainer.received_sigterm``) but, in one process, only acts on it at the end of an
    epoch, and our runs are one long epoch: without this, a pre-empted job would train on until SIGKILL.

    With several processes (ddp_spawn workers, or one SLURM task per rank) the ranks must stop at the same step, and
    the signal reaches each at a different point of its step. So, while training runs, each rank only notes the
    signal (this replaces Lightning's handler, which would run a collective inside the handler, wherever the rank
    happens to be), and at the end of every step the ranks agree (one all-reduce of a flag): if any rank was
    signalled, all save last.ckpt at that step and stop together.
    """

    def __init__(self, ckpt_path: Path) -> None:
        self.ckpt_path = ckpt_path
        self._pending, self._rank = False, 0

    def on_train_start(self, trainer, pl_module) -> None:
        # After Lightning registered its handlers (just before the fit loop); its teardown restores the ones before.
        self._pending, self._rank = False, trainer.global_rank
        if trainer.world_size > 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._note_signal)

    def _note_signal(self, signum, frame) -> None:
        if not self._pending:
            log.warning(
                "rank %d (pid %d) received SIGTERM: finishing this step, then all ranks save last.ckpt and stop",
                self._rank,
                os.getpid(),
            )
        self._pending = True

    def on_train_batch_end(self, trainer, *args) -> None:
        pending = self._pending or bool(getattr(trainer, "received_sigterm", False))
        if trainer.world_size > 1:  # every rank takes part, every step, so that all stop at the same one
            pending = trainer.strategy.reduce_boolean_decision(pending, all=False)
        if not pending:
            return
        trainer.save_checkpoint(self.ckpt_path)  # rank 0 writes, then all wait at a barrier
        if trainer.world_size > 1:
            # The first rank to end makes the launcher terminate the others: flush the metrics before any ends.
            for logger in trainer.loggers:
                logger.save()
            trainer.strategy.barrier("sigterm-saved")
        raise Interrupted(
            f"stopped by SIGTERM at step {trainer.global_step}; checkpoint saved to {self.ckpt_path}. "
            "Rerun the same command to resume."
        )


def fit(trainer: pl.Trainer, module: pl.LightningModule, **kwargs) -> None:
    """``trainer.fit``, with SIGTERM handled in the main process of a spawning strategy (``ddp_spawn``).

    That process only launches the workers and waits; by default SIGTERM would kill it at once and take the workers
    with it. Here it survives the signal, passes it on to the workers (who are signalled directly too when the whole
    process group is, as by SLURM; they stop together at a step and save last.ckpt there, see CheckpointOnSigterm),
    waits for them, and raises ``Interrupted`` (exit status 143) with the step they stopped at.
    """
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher  # noqa: PLC0415
    from torch.multiprocessing.spawn import ProcessException  # noqa: PLC0415

    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _MultiProcessingLauncher) or threading.current_thread() is not threading.main_thread():
        trainer.fit(module, **kwargs)
        return
    received: list[int] = []

    def pass_on(signum, frame) -> None:
        if not received:
            log.warning("received SIGTERM: passing it on to the worker processes and waiting for them to save")
        received.append(signum)
        launcher.kill(signum)

    previous = signal.signal(signal.SIGTERM, pass_on)
    try:
        trainer.fit(module, **kwargs)
    except ProcessException as exc:
        stopped = re.findall(r"^sae_sweep\.Interrupted: (.+)$", str(exc), flags=re.MULTILINE)
        if stopped:
            raise Interrupted(stopped[-1]) from None
        if received:
            raise Interrupted(
                f"stopped by SIGTERM before the workers could save a checkpoint ({exc}); rerun the same command to "
                "resume from the last periodic one"
            ) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if received:
        log.warning("SIGTERM came after the last training step: finishing the job")


def requeue_signal() -> signal.Signals:
    """The signal submitit requeues a job on: USR2 (SLURM sends it ``signal_delay_s`` before the time limit, and a
    pre-emption can send it too), or the one named by ``SUBMITIT_PREEMPT_SIGNAL``, as submitit itself reads it."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, name, signal.SIGUSR2)


class CheckpointBeforeRequeue(pl.Callback):
    """Under submitit (``hydra/launcher=slurm`` or ``submitit_local``), write last.ckpt before the job is requeued.

    Submitit's handler for its requeue signal resubmits the job and exits at once, wherever training is, so the
    resubmitted job would lose every step since the last periodic checkpoint. While ``fit`` runs, this callback holds
    that handler back: it lets the current step finish, writes last.ckpt, then calls submitit's handler, which
    resubmits the job (rank 0) and exits; the resubmitted job resumes from exactly that step. Outside ``fit`` (and
    in processes submitit did not start, where the signal has no handler) nothing changes.
    """

    def __init__(self, ckpt_path: Path) -> None:
        self.ckpt_path = ckpt_path
        self.signum = requeue_signal()
        self._submitit_handler = None
        self._pending = False

    def on_fit_start(self, trainer, pl_module) -> None:
        handler = signal.getsignal(self.signum)
        if callable(handler) and threading.current_thread() is threading.main_thread():
            self._submitit_handler, self._pending = handler, False
            signal.signal(self.signum, self._note_signal)

    def _note_signal(self, signum, frame) -> None:
        log.warning("received %s: finishing this step and saving last.ckpt before the requeue", self.signum.name)
        self._pending = True

    def _requested(self, trainer) -> bool:
        if self._submitit_handler is None:
            return False
        if trainer.world_size > 1:  # every rank saves together (save_checkpoint waits at a barrier)
            return trainer.strategy.reduce_boolean_decision(self._pending, all=False)
        return self._pending

    def on_train_batch_end(self, trainer, *args) -> None:
        if self._requested(trainer):
            self._hand_over(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._requested(trainer):  # the signal came after the last step: requeue anyway, at the final step
            self._hand_over(trainer)

    def _hand_over(self, trainer) -> None:
        step = trainer.global_step
        try:
            trainer.save_checkpoint(self.ckpt_path)
            log.warning(
                "saved %s at step %d; handing over to submitit, which requeues this job to resume from there",
                self.ckpt_path,
                step,
            )
        except Exception as exc:  # noqa: BLE001 - a requeue from an older checkpoint beats no requeue at all
            log.error("could not save %s at step %d (%s); requeueing from the one before", self.ckpt_path, step, exc)
        handler = self._release()
        handler(self.signum, None)  # rank 0: resubmits the job and exits (SystemExit); other ranks: returns
        raise Interrupted(
            f"stopped by {self.signum.name} at step {step}; checkpoint saved to {self.ckpt_path}; "
            "rank 0 has requeued the job"
        )

    def _release(self):
        handler, self._submitit_handler = self._submitit_handler, None
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(self.signum, handler)
        return handler

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._release()

    def teardown(self, trainer, pl_module, stage) -> None:
        self._release()


class ReportResume(pl.Callback):
    """Say at which step a resumed run goes on, so a log shows that a requeued or rerun job did not start over."""

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step > 0:
            log.info("resumed at step %d of %d", trainer.global_step, trainer.max_steps)


class _StepProgressBar(RichProgressBar):
    """Rich progress over steps: runs here are step-based, so Lightning's "Epoch 0/-2" label would only confuse."""

    def _get_train_description(self, current_epoch: int) -> str:
        return "train"


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
    from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: PLC0415

    callbacks = [
        *callbacks,
        ModelCheckpoint(dirpath=run_dir / CKPT_DIR, save_last=True, save_top_k=0, every_n_train_steps=ckpt_every),
        CheckpointOnSigterm(run_dir / CKPT_DIR / "last.ckpt"),
        CheckpointBeforeRequeue(run_dir / CKPT_DIR / "last.ckpt"),
        ReportResume(),
    ]
    if tcfg.progress_bar:
        callbacks.append(_StepProgressBar(refresh_rate=10, leave=True))  # redraws cost ~0.1 ms each
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
        enable_progress_bar=tcfg.progress_bar,
        enable_model_summary=False,
        default_root_dir=run_dir,
        plugins=plugins,
        callbacks=callbacks,
    )
