import numpy as np
import pytest
import torch

from sae_sweep import TrainingError, lit_sae
from sae_sweep.lit import TrainerConfig, build_trainer
from sae_sweep.lit_sae import ActivationBatches, ActivationDataModule, SAEModule, evaluate_sae
from sae_sweep.runs import last_checkpoint
from sae_sweep.sae import SAEConfig, SparseAutoencoder


@pytest.fixture
def acts_file(tmp_path, monkeypatch):
    """1000 rows whose first column is the row number, so every batch says which rows it holds."""
    monkeypatch.setattr(lit_sae, "CHUNK_ROWS", 96)  # several chunks even on tiny data
    rows = np.zeros((1000, 4), dtype=np.float16)
    rows[:, 0] = np.arange(1000)
    path = tmp_path / "acts.npy"
    np.save(path, rows)
    return path


def row_ids(batches) -> list[int]:
    return [int(v) for b in batches for v in b[:, 0].tolist()]


def test_one_epoch_is_a_permutation_in_float32(acts_file):
    ds = ActivationBatches(acts_file, batch_size=32, seed=0)
    batches = list(ds)
    assert ds.n_steps == len(batches) == 31 and all(b.dtype == torch.float32 and b.shape == (32, 4) for b in batches)
    ids = row_ids(batches)
    assert len(set(ids)) == len(ids) == 31 * 32  # no row twice; the last partial batch is dropped
    assert ids != sorted(ids)
    assert row_ids(ActivationBatches(acts_file, 32, seed=0)) == ids
    assert row_ids(ActivationBatches(acts_file, 32, seed=1)) != ids


def test_epochs_reshuffle(acts_file):
    ids = row_ids(ActivationBatches(acts_file, 100, seed=0, epochs=2))
    first, second = ids[:1000], ids[1000:]
    assert sorted(first) == sorted(second) == list(range(1000)) and first != second


def test_resume_yields_the_same_batches(acts_file):
    full = list(ActivationBatches(acts_file, 16, seed=3, epochs=2))
    resumed = list(ActivationBatches(acts_file, 16, seed=3, epochs=2, start=70))
    assert len(resumed) == len(full) - 70
    assert all(torch.equal(a, b) for a, b in zip(full[70:], resumed, strict=True))


def test_ranks_split_each_global_batch(acts_file):
    single = list(ActivationBatches(acts_file, 20, seed=0))
    rank0 = list(ActivationBatches(acts_file, 10, seed=0, rank=0, world=2))
    rank1 = list(ActivationBatches(acts_file, 10, seed=0, rank=1, world=2))
    assert len(rank0) == len(rank1) == len(single) == 50
    for s, a, b in zip(single, rank0, rank1, strict=True):
        assert torch.equal(torch.cat([a, b]), s)


def test_too_few_rows_for_one_batch(acts_file):
    with pytest.raises(ValueError, match="fewer than one batch of 2000"):
        ActivationBatches(acts_file, 1000, seed=0, world=2)


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
