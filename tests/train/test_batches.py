"""Activation batches: a seeded permutation per epoch, exact resumption, ranks' slices, and stacks of steps."""

import numpy as np
import pytest
import torch

from sae_sweep import ConfigError
from sae_sweep.train import batches
from sae_sweep.train.batches import ActivationBatches


@pytest.fixture
def acts_file(tmp_path, monkeypatch):
    """1000 rows whose first column is the row number, so every batch says which rows it holds."""
    monkeypatch.setattr(batches, "CHUNK_ROWS", 96)  # several chunks even on tiny data
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


def test_step_i_reads_the_seeded_permutations_i_th_slice(acts_file):
    """The order is the documented one (numpy's permutation seeded by [seed, epoch]), across chunks and epochs, so
    a faster read that keeps the same rows but shuffles them differently changes every dictionary, and fails."""
    ids = row_ids(ActivationBatches(acts_file, 32, seed=5, epochs=2))
    want = [int(r) for e in (0, 1) for r in np.random.default_rng([5, e]).permutation(1000)[: 31 * 32]]
    assert ids == want


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


@pytest.mark.parametrize("world", [1, 2])
def test_stacks_hold_the_same_batches_and_end_at_multiples_of_the_stack_and_the_breaks(acts_file, world):
    one = list(ActivationBatches(acts_file, 10, seed=3, epochs=2, rank=world - 1, world=world))
    for start in (0, 13):  # from the beginning, and resumed inside a stack
        stacks = list(ActivationBatches(acts_file, 10, 3, 2, start, world - 1, world, stack=4, breaks=(6,)))
        ends = np.cumsum([len(s) for s in stacks]) + start  # steps done after each stack
        n = len(one)
        assert all(e % 4 == 0 or e % 6 == 0 or e == n for e in ends) and ends[-1] == n
        assert max(len(s) for s in stacks) == 4 and all(s.shape[1:] == (10, 4) for s in stacks)
        assert torch.equal(torch.cat(list(stacks)).flatten(0, 1), torch.cat(one[start:]))
        # One process: stacks inside one converted chunk are views of it (several share its storage); two
        # processes: each rank's slices of consecutive global batches are not adjacent, so each stack is a copy.
        storages = {s.untyped_storage().data_ptr() for s in stacks}
        assert (len(storages) < len(stacks)) if world == 1 else (len(storages) == len(stacks))


def test_too_few_rows_for_one_batch(acts_file):
    with pytest.raises(ConfigError, match=r"fewer than one step's batch of 2000 \(sae.batch_size=1000 x 2 processes\)"):
        ActivationBatches(acts_file, 1000, seed=0, world=2)
