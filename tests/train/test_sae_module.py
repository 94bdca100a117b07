import csv as csv_module
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from sae_sweep import ConfigError, TrainingError
from sae_sweep.train import sae_module
from sae_sweep.train.batches import ActivationDataModule
from sae_sweep.train.runs import last_checkpoint
from sae_sweep.train.sae import SAEConfig, SparseAutoencoder
from sae_sweep.train.sae_module import SAEModule, evaluate_sae
from sae_sweep.train.trainer import TrainerConfig, build_trainer


def test_evaluate_counts_firing_exactly():
    sae = SparseAutoencoder(2, SAEConfig(dict_size=2))
    with torch.no_grad():
        sae.decoder.copy_(torch.eye(2))
        sae.encoder.copy_(torch.eye(2))
        sae.encoder_bias.zero_()
    acts = np.array([[1, 0], [2, 0], [0, 3], [-1, -1]], dtype=np.float16)
    metrics, counts = evaluate_sae(sae, acts, l1_coeff=0.1, chunk=3)
    assert counts.tolist() == [2, 1]
    # Reconstruction is exact except the last row (both codes 0): squared error 2 over 8 elements.
    assert metrics["val/mse"] == pytest.approx(2 / 8)
    assert metrics["val/l0"] == pytest.approx(3 / 4) and metrics["val/l1"] == pytest.approx(6 / 4)
    assert metrics["val/dead_fraction"] == 0.0


def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    rows = np.random.default_rng(0).normal(size=(64 * 8, 4)).astype(np.float16)
    cfg = SAEConfig(dict_size=8, batch_size=8, seed=0, data_seed=0, ckpt_every=2, log_every=1)
    order = np.random.default_rng([0, 0]).permutation(len(rows))  # ActivationBatches' epoch-0 order
    rows[order[5 * 8]] = np.nan  # first row of the batch of step 5
    np.save(tmp_path / "acts.npy", rows)
    trainer = build_trainer(
        TrainerConfig(progress_bar=False), run_dir=tmp_path / "run", max_steps=64, loggers=[], ckpt_every=2
    )
    with pytest.raises(TrainingError, match=r"the SAE loss became nan at step 5; the checkpoints written before"):
        trainer.fit(SAEModule(4, cfg), datamodule=ActivationDataModule(tmp_path / "acts.npy", cfg))
    ckpt = torch.load(last_checkpoint(tmp_path / "run"), map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())


# ----------------------------------------------------------------------------------------- dead-feature resampling


def test_reset_adam_zeroes_exactly_the_given_rows():
    sae = SparseAutoencoder(3, SAEConfig(dict_size=4))
    opt = torch.optim.Adam(sae.parameters(), lr=0.1)
    for _ in range(2):
        sae.fused_grads(torch.randn(5, 3), 1e-3)
        opt.step()
    before = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in sae.parameters()}
    idx = torch.tensor([1, 3])
    sae_module.reset_adam_(opt, sae.decoder, idx, dim=1)
    sae_module.reset_adam_(opt, sae.encoder, idx, dim=0)
    keep = torch.tensor([0, 2])
    for p, dim in ((sae.decoder, 1), (sae.encoder, 0)):
        for key in ("exp_avg", "exp_avg_sq"):
            now, old = opt.state[p][key], before[id(p)][key]
            assert (now.index_select(dim, idx) == 0).all() and (old.index_select(dim, idx) != 0).all()
            assert torch.equal(now.index_select(dim, keep), old.index_select(dim, keep))
        assert torch.equal(opt.state[p]["step"], before[id(p)]["step"])
    assert all(torch.equal(v, before[id(sae.encoder_bias)][k]) for k, v in opt.state[sae.encoder_bias].items())


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The training rows of a metrics.csv (those with a train/ value)."""
    with path.open() as f:
        return [r for r in csv_module.DictReader(f) if r.get("train/mse")]


def gaussian_acts(tmp_path) -> Path:
    path = tmp_path / "gauss.npy"
    np.save(path, np.random.default_rng(0).normal(size=(64 * 8, 4)).astype(np.float16))  # 64 steps of 8
    return path


RESAMPLE = SAEConfig(  # one step per Lightning batch: the Record callback below acts between steps
    dict_size=8, batch_size=8, seed=0, data_seed=0, resample_every=8, ckpt_every=4, log_every=4, steps_per_batch=1
)


class Killed(Exception):
    """Stands for a kill: Lightning re-raises it without saving anything (KeyboardInterrupt would exit)."""


class Record(pl.Callback):
    """Silences features (encoder bias -100) at given steps, records the resampling counts after every step and
    Adam's moments and ``last_fired`` after steps 7 and 8; with ``kill_at``, dies at the start of that step."""

    def __init__(self, silence: dict[int, list[int]], kill_at: int | None = None) -> None:
        self.silence, self.kill_at, self.counts, self.snap = silence, kill_at, {}, {}

    def on_train_batch_start(self, trainer, module, *args) -> None:
        if trainer.global_step == self.kill_at:
            raise Killed  # last.ckpt of the step before is already written
        with torch.no_grad():
            module.sae.encoder_bias[self.silence.get(trainer.global_step, [])] = -100.0

    def on_train_batch_end(self, trainer, module, *args) -> None:
        step = trainer.global_step - 1
        self.counts[step] = module.resampled.tolist()
        if step in (7, 8):
            state = trainer.optimizers[0].state
            params = {"decoder": (module.sae.decoder, 1), "encoder": (module.sae.encoder, 0)}
            params["encoder_bias"] = (module.sae.encoder_bias, 0)
            moments = {
                (name, key): state[p][key].movedim(dim, 0).reshape(8, -1).abs().sum(1)  # (J,) per feature
                for name, (p, dim) in params.items()
                for key in ("exp_avg", "exp_avg_sq")
            }
            self.snap[step] = moments, module.last_fired.clone()


def fit(tmp_path, acts, name: str, module: SAEModule, *callbacks, ckpt=None, loggers=()) -> pl.Trainer:
    trainer = build_trainer(
        TrainerConfig(progress_bar=False),
        run_dir=tmp_path / name,
        max_steps=64,
        loggers=list(loggers),
        ckpt_every=4,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule=ActivationDataModule(acts, RESAMPLE), ckpt_path=ckpt)
    return trainer


# Features 0 and 1 fire at step 0 (so their Adam moments are not zero) and are silenced from step 1 on.
SILENCE_0_1 = {1: [0, 1]}


def test_resampling_revives_silenced_features_in_the_first_half_only(tmp_path):
    acts = gaussian_acts(tmp_path)
    module, rec = SAEModule(4, RESAMPLE), Record({**SILENCE_0_1, 33: [5]})
    csv = CSVLogger(tmp_path / "csv", name="", version="")
    fit(tmp_path, acts, "run", module, rec, loggers=[csv])
    csv.save()
    logged = {int(r["step"]): r["train/resampled"] for r in csv_rows(tmp_path / "csv" / "metrics.csv")}
    assert (logged[7], logged[11], logged[15], logged[63]) == ("0.0", "2.0", "2.0", "0.0")  # the latest count
    # Features 0 and 1 are resampled at step 8 (silent for steps 1..8) and fire from then on; no other feature is
    # silent for a window, and feature 5, silenced at step 33, is never resampled: steps 32.. are the second half.
    changes = {s: c for s, c in rec.counts.items() if c != rec.counts.get(s - 1, [0, 0])}
    assert changes == {8: [2, 2], 16: [0, 2]}  # the latest count drops to 0 at the next resampling (step 16)
    assert module.n_resampled == 2
    assert (module.sae.encoder_bias[:2].abs() < 1).all() and (module.last_fired[:2] == 63).all()
    assert module.sae.encoder_bias[5] < -99 and module.last_fired[5] < 33
    (before, fired_before), (after, fired_after) = rec.snap[7], rec.snap[8]
    for key, per_feature in after.items():  # Adam's moments zeroed for exactly the resampled features
        assert (before[key][:2] > 0).all() and (per_feature[:2] == 0).all() and (per_feature[2:] > 0).all(), key
    assert fired_before[:2].tolist() == [0, 0] and fired_after[:2].tolist() == [8, 8]
    torch.testing.assert_close(module.sae.decoder.norm(dim=0), torch.ones(8))


def test_resampling_off_adds_no_buffer_and_counts_zero():
    module = SAEModule(4, SAEConfig(dict_size=8))
    assert module.n_resampled == 0 and "resampled" not in module.state_dict()


def test_resumed_resampling_run_equals_the_uninterrupted_one(tmp_path):
    acts = gaussian_acts(tmp_path)
    torch.manual_seed(0)
    whole = SAEModule(4, RESAMPLE)
    fit(tmp_path, acts, "whole", whole, Record(SILENCE_0_1))
    with pytest.raises(Killed):
        fit(tmp_path, acts, "cut", SAEModule(4, RESAMPLE), Record(SILENCE_0_1, kill_at=6))
    ckpt = last_checkpoint(tmp_path / "cut")
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 4  # before the resampling
    torch.manual_seed(123)  # a different global RNG state: the resampling must not read it
    resumed = SAEModule(4, RESAMPLE)
    fit(tmp_path, acts, "cut", resumed, ckpt=str(ckpt))
    assert resumed.n_resampled == whole.n_resampled == 2
    for k, v in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


@pytest.mark.parametrize(
    "world, max_steps, needle", [(2, 64, "needs one process; this run has 2"), (1, -1, "needs the run's length")]
)
def test_resampling_refuses_ddp_and_unknown_length(world, max_steps, needle):
    module = SAEModule(4, RESAMPLE)
    module._trainer = SimpleNamespace(world_size=world, max_steps=max_steps)
    with pytest.raises(ConfigError, match=rf"sae\.resample_every > 0 {needle}"):
        module.setup("fit")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_allocator_keeps_large_freed_blocks_on_linux():
    """SAEModule.setup's allocator setting takes on glibc (mallopt returns 1 for each of the two thresholds)."""
    from sae_sweep.train import allocator  # noqa: PLC0415

    assert allocator.keep_freed_blocks() is True
    assert allocator.MMAP_THRESHOLD >= 8 * 2**20  # a (256, 8192) float32 intermediate comes from the heap


# ----------------------------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("step", ["dense", "sparse", "auto"])
def test_bf16_mixed_sae_trains_through_autograd_on_every_step_path(tmp_path, step):
    """sae.precision=bf16-mixed: Lightning's autocast and the hand-written step do not mix (its sparse products have
    no bf16 kernel on the CPU, and its dense decode would silently run in bf16), so such a run takes autograd."""
    rows = np.abs(np.random.default_rng(0).normal(size=(64 * 16, 16))).astype(np.float16)
    np.save(tmp_path / "acts.npy", rows)
    cfg = SAEConfig(dict_size=64, batch_size=16, precision="bf16-mixed", step=step, log_every=4, ckpt_every=100)
    module = SAEModule(16, cfg)
    paths = []
    module.sae.fused_grads = lambda *a, **k: paths.append("fused")  # would be taken by a 32-true run
    trainer = build_trainer(
        TrainerConfig(progress_bar=False, precision="bf16-mixed"),
        run_dir=tmp_path / "run",
        max_steps=32,
        loggers=[],
        ckpt_every=100,
    )
    trainer.fit(module, datamodule=ActivationDataModule(tmp_path / "acts.npy", cfg))
    assert paths == [] and int(module.progress[0]) == 32
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in module.sae.parameters())
