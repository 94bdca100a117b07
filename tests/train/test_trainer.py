import numpy as np
import pytest
import torch

from sae_sweep import ConfigError, DataError
from sae_sweep.store import ArtifactStore, Paths
from sae_sweep.tracking import LoggerConfig
from sae_sweep.train.corpus import DataConfig
from sae_sweep.train.gpt import MODEL_TYPE, GPTConfig
from sae_sweep.train.gpt_module import PretrainConfig, RandomBlocks
from sae_sweep.train.pretrain import PretrainJob
from sae_sweep.train.sae_stage import resolve_gpt
from sae_sweep.train.trainer import TrainerConfig


def test_lr_schedule_exact_points():
    cfg = PretrainConfig(lr=1.0, min_lr=0.1, warmup_steps=4, max_steps=14)
    assert cfg.lr_at(0) == pytest.approx(0.2) and cfg.lr_at(3) == pytest.approx(0.8)
    assert cfg.lr_at(4) == pytest.approx(1.0)  # warm-up done: cosine starts at the peak
    assert cfg.lr_at(9) == pytest.approx(0.55)  # halfway through the cosine: (1 + 0.1) / 2
    assert cfg.lr_at(14) == pytest.approx(0.1) and cfg.lr_at(100) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "kw",
    [
        {"warmup_steps": 800},
        {"min_lr": 1.0},
        {"beta2": 1.0},
        {"max_steps": 0},
        {"grad_clip": -1.0},
        {"tag": "Long"},
        {"tag": "a/b"},
        {"tag": "-x"},
    ],
)
def test_bad_pretrain_config(kw):
    with pytest.raises(ConfigError, match="pretrain"):
        PretrainConfig(**kw)


def test_random_blocks_are_windows_shifted_by_one(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16)
    tokens.tofile(tmp_path / "t.bin")
    x, y = RandomBlocks(tmp_path / "t.bin", block_size=8, batch_size=4, seed=0).batch(0)
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 7, dtype=torch.long))


def test_resumed_stream_continues_exactly(tmp_path):
    rng = np.random.default_rng(1)
    rng.integers(0, 500, 5000, dtype=np.uint16).tofile(tmp_path / "t.bin")
    full = list(zip(range(6), iter(RandomBlocks(tmp_path / "t.bin", 16, 3, seed=7)), strict=False))
    resumed = list(zip(range(2), iter(RandomBlocks(tmp_path / "t.bin", 16, 3, seed=7, start=4)), strict=False))
    for (_, (xa, ya)), (_, (xb, yb)) in zip(full[4:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_rank = RandomBlocks(tmp_path / "t.bin", 16, 3, seed=7, rank=1).batch(0)[0]
    assert not torch.equal(other_rank, full[0][1][0])


def test_validation_stream_is_finite_and_fixed(tmp_path):
    np.arange(3000, dtype=np.uint16).tofile(tmp_path / "v.bin")
    ds = RandomBlocks(tmp_path / "v.bin", 16, 2, seed=1, n_batches=3)
    a, b = [x for x, _ in ds], [x for x, _ in ds]
    assert len(a) == 3 and all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_a_tagged_gpt_is_named_by_its_tag_and_never_the_default(tmp_path):
    def job(tag: str) -> PretrainJob:
        cfg = PretrainConfig(tag=tag)
        return PretrainJob(DataConfig(), GPTConfig(), cfg, TrainerConfig(), LoggerConfig(), Paths(tmp_path))

    assert (job("").name, job("long").name) == ("gpt-embedded-s0", "gpt-embedded-s0-long")
    assert job("long").untrained_name == job("").untrained_name == "gpt-embedded-s0-untrained"
    store = ArtifactStore(tmp_path / "store")
    save = lambda name, tag: store.save(  # noqa: E731 - a model artifact with just the metadata resolution reads
        name, MODEL_TYPE, lambda f: (f / "w").write_text(name), {"pretrain": {"tag": tag}}
    )
    save("gpt-embedded-s0-long", "long")
    with pytest.raises(DataError, match="or at a tagged GPT by name \\(gpt-embedded-s0-long\\)"):
        resolve_gpt(store, None)
    save("gpt-embedded-s0", "")
    save("gpt-embedded-s0-long", "long")  # newer than the default one, and still not picked
    assert resolve_gpt(store, None).name == "gpt-embedded-s0"
    assert resolve_gpt(store, "gpt-embedded-s0-long").version == 1
