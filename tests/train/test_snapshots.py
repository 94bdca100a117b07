"""The training-budget axis: when snapshots are taken, what they hold, and that they survive a kill and a resume."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sae_sweep.dictionary import Dictionary
from sae_sweep.errors import ConfigError
from sae_sweep.train import snapshots
from sae_sweep.train.batches import ActivationDataModule
from sae_sweep.train.runs import last_checkpoint
from sae_sweep.train.sae import SAEConfig
from sae_sweep.train.sae_module import SAEModule
from sae_sweep.train.trainer import TrainerConfig, build_trainer
from tests.conftest import TINY_SAE, KillAt, Killed, dictionary_config


@pytest.mark.parametrize(
    ("first", "batch", "n_steps", "expected"),
    [
        (16384, 256, 2929, [64, 128, 256, 512, 1024, 2048]),  # the demo's 750k activations
        (16384, 512, 40, [32]),  # two processes: the budget is in activations, not steps
        (100, 256, 5, [1, 2, 4]),  # 100 and 200 both first reached at step 1: one snapshot
        (256, 256, 4, [1, 2]),  # step 4 is the final state, the dictionary itself
        (0, 256, 1000, []),
    ],
)
def test_snapshot_steps_are_the_first_steps_past_each_doubling(first, batch, n_steps, expected):
    assert snapshots.snapshot_steps(first, batch, n_steps) == expected


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_a_bad_snapshot_budget_is_named(value):
    with pytest.raises(ConfigError, match="sae.snapshot_first"):
        SAEConfig(snapshot_first=value)


# batches of 8, checkpoints every 6 steps; no held-out evaluation in the way; snapshots after steps 16, 32, 64, 128
CFG = replace(TINY_SAE, eval_every=1000, until="budget", snapshot_first=8 * 16, epochs=4)


def _acts(tmp_path):
    path = tmp_path / "acts.npy"
    np.save(path, np.random.default_rng(0).normal(size=(64 * 8, 4)).astype(np.float16))  # 64 steps a pass
    return path


def _fit(tmp_path, acts, name, cfg, *callbacks, ckpt=None) -> SAEModule:
    torch.manual_seed(0)
    module = SAEModule(4, cfg)
    module.held_out = torch.from_numpy(np.load(acts)[:64].astype(np.float32))
    module.snapshot_dir = tmp_path / name / snapshots.SNAPSHOT_DIR
    datamodule = ActivationDataModule(acts, cfg)
    trainer = build_trainer(
        TrainerConfig(progress_bar=False),
        run_dir=tmp_path / name,
        max_steps=datamodule.dataset().n_steps,
        loggers=[],
        ckpt_every=cfg.ckpt_every,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    return module


def test_a_snapshot_at_budget_b_is_the_state_a_run_capped_at_b_ends_in(tmp_path):
    acts = _acts(tmp_path)
    long = _fit(tmp_path, acts, "long", CFG)
    files = sorted(p.name for p in (tmp_path / "long" / snapshots.SNAPSHOT_DIR).iterdir())
    assert files == [f"{s:09d}.safetensors" for s in (16, 32, 64, 128)]  # whole files only: no temp names left
    short = _fit(tmp_path, acts, "short", replace(CFG, epochs=1))  # one pass: 64 steps, the third snapshot's budget
    shot = load_file(str(tmp_path / "long" / snapshots.SNAPSHOT_DIR / f"{64:09d}.safetensors"))
    assert torch.equal(shot["decoder"], short.sae.decoder.detach())
    assert not torch.equal(shot["decoder"], long.sae.decoder.detach())  # the long run went on learning
    fired = (short.sae(short.held_out)[1] > 0).sum(dim=0)
    assert torch.equal(shot["fired"], fired)


def test_gather_keeps_the_snapshots_before_the_end_and_the_dictionary_reads_them_back(tmp_path):
    acts = _acts(tmp_path)
    _fit(tmp_path, acts, "long", CFG)
    out = tmp_path / "snapshots.safetensors"
    metas = snapshots.gather(tmp_path / "long" / snapshots.SNAPSHOT_DIR, final_steps=64, out=out)
    assert [m["steps"] for m in metas] == [16, 32, 64]  # not 128: beyond this run's end (an earlier attempt's)
    assert [m["activations_seen"] for m in metas] == [128, 256, 512]
    assert all(0 <= m["dead_fraction"] <= 1 and m["fvu"] > 0 for m in metas)
    assert snapshots.gather(tmp_path / "nowhere", final_steps=64, out=tmp_path / "none.safetensors") is None
    assert not (tmp_path / "none.safetensors").exists()
    config = dictionary_config(dict_size=8, training={"converged": False, "activations_seen": 512, "snapshots": metas})
    d = Dictionary("d", torch.zeros(4, 8), {}, config, np.zeros(8), tmp_path)
    shots = d.snapshots()
    raw = load_file(str(tmp_path / "long" / snapshots.SNAPSHOT_DIR / f"{32:09d}.safetensors"))
    assert [s.steps for s in shots] == [16, 32, 64] and torch.equal(shots[1].decoder, raw["decoder"])
    assert np.array_equal(shots[1].fired, raw["fired"].numpy()) and shots[1].metrics["l0"] == metas[1]["l0"]


def test_a_missing_snapshots_file_is_named(tmp_path):
    metas = [{"steps": 16, "activations_seen": 128, "loss": 1.0}]
    config = dictionary_config(training={"converged": False, "activations_seen": 512, "snapshots": metas})
    with pytest.raises(Exception, match="snapshots.safetensors is unreadable"):
        Dictionary("d", torch.zeros(16, 64), {}, config, np.zeros(64), tmp_path).snapshots()


def test_a_killed_and_resumed_run_writes_the_same_snapshots(tmp_path):
    acts = _acts(tmp_path)
    _fit(tmp_path, acts, "whole", CFG)
    with pytest.raises(Killed):
        _fit(tmp_path, acts, "cut", CFG, KillAt(40))  # after the snapshots at 16 and 32, checkpoint at 36
    ckpt = last_checkpoint(tmp_path / "cut")
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 36
    _fit(tmp_path, acts, "cut", CFG, ckpt=str(ckpt))
    for name in sorted(p.name for p in (tmp_path / "whole" / snapshots.SNAPSHOT_DIR).iterdir()):
        whole = (tmp_path / "whole" / snapshots.SNAPSHOT_DIR / name).read_bytes()
        assert (tmp_path / "cut" / snapshots.SNAPSHOT_DIR / name).read_bytes() == whole, name


def test_a_run_started_over_forgets_an_earlier_attempts_snapshots(tmp_path):
    acts = _acts(tmp_path)
    stale = tmp_path / "run" / snapshots.SNAPSHOT_DIR / f"{200:09d}.safetensors"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from another attempt")
    _fit(tmp_path, acts, "run", replace(CFG, epochs=1))
    assert not stale.exists()
