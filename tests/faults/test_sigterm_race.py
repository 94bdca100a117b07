"""SIGTERM landing after CheckpointOnSigterm's batch end (one process): stopped at the next batch end with a checkpoint
and Interrupted (exit 143), never Lightning's SIGTERMException (a SystemExit with status 0 and no checkpoint)."""

import os
import signal

import numpy as np
import pytest
import torch

from sae_sweep.errors import Interrupted
from sae_sweep.train.batches import ActivationDataModule
from sae_sweep.train.runs import last_checkpoint
from sae_sweep.train.sae_module import SAEModule
from sae_sweep.train.trainer import TrainerConfig, build_trainer
from tests.conftest import TINY_SAE

# TINY_SAE's Lightning batches hold up to 8 steps and end at multiples of 8 and of its ckpt_every, 6: at steps
# 6, 8, 12, 16, ... The signal is sent at the end of the batch that ends at step 12; the next batch ends at 16.
SIGNAL_AT, STOPPED_AT = 12, 16


class SignalledLate(SAEModule):
    """Sends SIGTERM to its own process from the module's batch-end hook, which Lightning calls after every
    callback's: the window between CheckpointOnSigterm's check and Lightning's own."""

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.global_step == SIGNAL_AT:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_after_the_callbacks_step_end_stops_at_the_next_batch_end_with_a_checkpoint(tmp_path):
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).normal(size=(64 * 8, 4)).astype(np.float16))
    torch.manual_seed(0)
    module = SignalledLate(4, TINY_SAE)
    trainer = build_trainer(
        TrainerConfig(progress_bar=False), run_dir=tmp_path / "run", max_steps=64, loggers=[], ckpt_every=1000
    )
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match=f"stopped by SIGTERM at step {STOPPED_AT}"):
        trainer.fit(module, datamodule=ActivationDataModule(acts, TINY_SAE))
    saved = torch.load(last_checkpoint(tmp_path / "run"), map_location="cpu", weights_only=False)
    assert saved["global_step"] == STOPPED_AT
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are put back after fit
