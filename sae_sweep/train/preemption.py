"""Stopping cleanly when asked: SIGTERM (pre-emption, ``scancel``) and submitit's requeue signal (a time limit).

Either way the Lightning batch in progress finishes (one GPT step; up to ``sae.steps_per_batch`` SAE steps), every
rank agrees on it, ``last.ckpt`` is written there, and the job stops with ``Interrupted`` (exit status 143) or hands
over to submitit, which requeues it; the rerun resumes at that step.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from pathlib import Path

import lightning.pytorch as pl

from sae_sweep.errors import Interrupted

log = logging.getLogger(__name__)


class CheckpointOnSigterm(pl.Callback):
    """On SIGTERM, finish the current Lightning batch, write last.ckpt, and stop with ``Interrupted``.

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
        # Replaced in one process too: Lightning's own flag is also read after this callback's step end, where it
        # raises SIGTERMException, which exits with status 0 and no checkpoint when the signal lands in between.
        self._pending, self._rank = False, trainer.global_rank
        if threading.current_thread() is threading.main_thread():
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
        stopped = re.findall(r"^sae_sweep(?:\.errors)?\.Interrupted: (.+)$", str(exc), flags=re.MULTILINE)
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
    that handler back: it lets the current Lightning batch finish, writes last.ckpt, then calls submitit's handler,
    which resubmits the job (rank 0) and exits; the resubmitted job resumes from exactly that step. Outside ``fit`` (and
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
