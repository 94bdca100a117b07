import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sae_sweep import ConfigError
from sae_sweep.train import harvest as H
from sae_sweep.train.corpus import DataConfig
from sae_sweep.train.gpt import GPT, GPTConfig
from sae_sweep.train.harvest import HarvestConfig, harvest, mlp_activations
from sae_sweep.train.tokens import prepare

from ..conftest import run_at_once


@pytest.fixture
def tokens(corpus_dir, tmp_path):
    return prepare(
        DataConfig(corpus="text_files", paths=(str(corpus_dir / "*.txt"),), vocab_size=300, val_fraction=0.1),
        tmp_path / "cache",
    )


def gpt(vocab: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=32)).eval()


def manual_layer2(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The layer-2 post-GELU activations, computed by hand from the model's parts."""
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(idx.shape[1]))
    for block in model.transformer.h[:2]:
        x = block(x)
    block = model.transformer.h[2]
    x = x + block.attn(block.ln_1(x))
    return torch.nn.functional.gelu(block.mlp.c_fc(block.ln_2(x))).reshape(-1, 128)


def test_hook_equals_manual_forward():
    model = gpt(50)
    idx = torch.randint(0, 50, (3, 32))
    acts = mlp_activations(model, idx, layer=2)
    assert acts.shape == (96, 128)
    with torch.no_grad():
        torch.testing.assert_close(acts, manual_layer2(model, idx))


def test_harvest_writes_float16_rows_of_the_right_windows(tokens, tmp_path):
    model = gpt(tokens.tokenizer.vocab_size)
    cfg = HarvestConfig(layer=2, n_tokens=100, n_val_tokens=40, batch_size=2, seed=5)
    acts = harvest(model, "digest", tokens, cfg, tmp_path / "cache")
    assert acts.train.shape == (100, 128) and acts.val.shape == (40, 128) and acts.train.dtype == np.float16
    # The first batch read is 2 windows of 32 tokens from the seeded generator: recompute them by hand.
    rng = np.random.default_rng([5, 2])
    starts = rng.integers(0, tokens.train.size - 32, size=2)
    idx = torch.from_numpy(np.stack([tokens.train[s : s + 32] for s in starts]).astype(np.int64))
    with torch.no_grad():
        expected = manual_layer2(model, idx).to(torch.float16)
    torch.testing.assert_close(torch.from_numpy(np.array(acts.train[:64])), expected, atol=2e-3, rtol=2e-3)


def test_harvest_is_reused_and_keyed(tokens, tmp_path, monkeypatch):
    model = gpt(tokens.tokenizer.vocab_size)
    cfg = HarvestConfig(n_tokens=64, n_val_tokens=32, batch_size=1)
    first = harvest(model, "digest", tokens, cfg, tmp_path)
    monkeypatch.setattr(H, "_fill", lambda *a: (_ for _ in ()).throw(AssertionError("harvested twice")))
    again = harvest(model, "digest", tokens, cfg, tmp_path)
    assert again.path == first.path
    np.testing.assert_array_equal(np.asarray(again.train), np.asarray(first.train))
    monkeypatch.undo()
    other = harvest(model, "other-weights", tokens, cfg, tmp_path)
    assert other.path != first.path


def test_layer_outside_model_fails_before_any_work(tokens, tmp_path):
    with pytest.raises(ConfigError, match=r"layer=6 is outside the model: it has layers 0\.\.5"):
        harvest(gpt(tokens.tokenizer.vocab_size), "d", tokens, HarvestConfig(layer=6), tmp_path)
    assert not (tmp_path / "activations").exists()


HARVEST_SCRIPT = """
import logging, sys, torch
from sae_sweep.train.corpus import DataConfig
from sae_sweep.train.tokens import prepare
from sae_sweep.train.harvest import HarvestConfig, harvest
from sae_sweep.train.gpt import GPT, GPTConfig
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
corpus, cache = sys.argv[1], sys.argv[2]
tokens = prepare(DataConfig(corpus="text_files", paths=(corpus,), vocab_size=300, val_fraction=0.1), cache)
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=tokens.tokenizer.vocab_size, block_size=32))
acts = harvest(model, "digest", tokens, HarvestConfig(n_tokens=30000, n_val_tokens=3000, batch_size=8), cache)
print("ROWS", acts.train.shape[0])
"""


@pytest.mark.slow
def test_concurrent_jobs_harvest_once_and_match_a_serial_run(corpus_dir, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(HARVEST_SCRIPT)
    pattern = str(corpus_dir / "*.txt")
    logs = "".join(run_at_once([str(script), pattern, str(tmp_path / "shared")], 3))
    assert logs.count("harvested 30000") == 1 and logs.count("reusing activation cache") == 2, logs
    assert logs.count("preparing tokens") == 1
    serial = subprocess.run(
        [sys.executable, str(script), pattern, str(tmp_path / "serial")], capture_output=True, text=True, timeout=300
    )
    assert serial.returncode == 0, serial.stdout + serial.stderr
    (shared,) = (tmp_path / "shared" / "activations").glob("L2-*")
    (alone,) = (tmp_path / "serial" / "activations").glob("L2-*")
    for name in ("train.npy", "val.npy", "meta.json"):
        a, b = (shared / name).read_bytes(), (alone / name).read_bytes()
        assert a == b or name == "meta.json" and json.loads(a)["files"] == json.loads(b)["files"]
