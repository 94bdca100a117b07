"""Where the time goes: the per-stage table every command ends with, and the progress lines a log file gets."""

import logging

import pytest

from sae_sweep.stages import Stages
from sae_sweep.train.trainer import LogProgress


def test_the_stage_table_lists_each_stage_with_what_it_made_and_the_total(monkeypatch):
    ticks = iter([0.0, 1.5, 2.0, 12.25])  # perf_counter at each stage's start and end
    monkeypatch.setattr("sae_sweep.stages.time.perf_counter", lambda: next(ticks))
    stages = Stages()
    with stages("harvest") as made:
        made("750,000 rows")
    with pytest.raises(RuntimeError), stages("train"):  # a stage that fails is still timed
        raise RuntimeError("boom")
    assert stages.table("sae-L2-J8-s0") == (
        "sae-L2-J8-s0, where the time went:\n"
        "  harvest       1.5 s  750,000 rows\n"
        "  train        10.2 s\n"
        "  total        11.8 s"
    )


class _Trainer:
    is_global_zero = True
    max_steps = 1000
    progress_bar_metrics: dict = {}

    def __init__(self, step: int):
        self.global_step = step


def test_a_progress_line_every_interval_with_rate_and_time_left(caplog):
    now = [100.0]
    progress = LogProgress("gpt-embedded-s0-1a2b", every_s=30.0, clock=lambda: now[0])
    progress.on_train_start(_Trainer(200), None)  # a resumed run: 200 steps done before
    caplog.set_level(logging.INFO, logger="sae_sweep.train.trainer")
    now[0] = 110.0
    progress.on_train_batch_end(_Trainer(300), None, None, None, 0)
    assert not caplog.records  # 10 s: not yet
    now[0] = 140.0
    trainer = _Trainer(600)
    trainer.progress_bar_metrics = {"train/loss": 4.2512, "L0": 12.0}
    progress.on_train_batch_end(trainer, None, None, None, 0)
    # 400 steps in 40 s: 10 steps/s, 400 steps left: 0.7 min
    assert caplog.records[-1].getMessage() == (
        "gpt-embedded-s0-1a2b: step 600/1,000, train/loss 4.251, L0 12, 10.0 steps/s, 0.7 min to step 1,000 at most"
    )
