import json

import pytest
import torch

from sae_sweep import DataError
from sae_sweep.store import ArtifactStore
from sae_sweep.train.gpt import GPT, GPTConfig, load_gpt, write_gpt
from sae_sweep.train.tokenizer import BPETokenizer

from .conftest import SAMPLE


def writer(text: str):
    return lambda folder: (folder / "a.txt").write_text(text)


def test_versions_and_latest(tmp_path):
    store = ArtifactStore(tmp_path)
    v0 = store.save("sae-L2-J8-s0", "sae-dictionary", writer("first"), {"dict_size": 8})
    v1 = store.save("sae-L2-J8-s0", "sae-dictionary", writer("second"))
    assert (v0.version, v1.version) == (0, 1)
    assert (store.get("sae-L2-J8-s0").path / "a.txt").read_text() == "second"
    assert (store.get("sae-L2-J8-s0:v0").path / "a.txt").read_text() == "first"
    assert store.get("sae-L2-J8-s0:v0").metadata == {"dict_size": 8}
    assert store.get(str(v0.path)).ref == "sae-L2-J8-s0:v0"
    assert store.names() == ["sae-L2-J8-s0"] and store.names("model") == []


def test_failed_write_leaves_previous_version_intact(tmp_path):
    store = ArtifactStore(tmp_path)
    store.save("m", "model", writer("good"))

    def full_disk(folder):
        (folder / "a.txt").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(DataError, match="the disk is full: writing a new version of m .* previous versions are intact"):
        store.save("m", "model", full_disk)
    assert [p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith(".")] == ["latest", "v0"]
    assert (store.get("m").path / "a.txt").read_text() == "good"


def test_edited_file_is_named_and_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    art = store.save("m", "model", writer("weights"))
    (art.path / "a.txt").write_text("tampered")
    with pytest.raises(DataError, match=r"m/v0/a\.txt does not match the sha256"):
        store.get("m")


def test_unknown_name_and_version_say_what_exists(tmp_path):
    store = ArtifactStore(tmp_path)
    store.save("m", "model", writer("x"))
    with pytest.raises(DataError, match=r"no artifact 'nope' in the store .* \(it holds: m\)"):
        store.get("nope")
    with pytest.raises(DataError, match=r"has no version 'v7' \(it has v0, and latest\)"):
        store.get("m:v7")
    with pytest.raises(DataError, match="no '/'"):
        store.save("a/b", "model", writer("x"))


def test_latest_of_type(tmp_path):
    store = ArtifactStore(tmp_path)
    assert store.latest_of_type("model") is None
    store.save("gpt-a", "model", writer("a"))
    store.save("sae", "sae-dictionary", writer("s"))
    store.save("gpt-b", "model", writer("b"))
    assert store.latest_of_type("model").name == "gpt-b"


def test_gpt_folder_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=300, n_layer=2, n_head=2, n_embd=8))
    tok = BPETokenizer.train([SAMPLE] * 10, 300)
    tok.save(tmp_path / "tokenizer.json")
    store = ArtifactStore(tmp_path / "store")
    art = store.save(
        "gpt-x-s0",
        "model",
        lambda f: write_gpt(f, model, tmp_path / "tokenizer.json", {"key": "k"}, {"steps": 3}),
    )
    loaded = load_gpt(art.path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight
    assert loaded.tokenizer.encode(SAMPLE) == tok.encode(SAMPLE)
    assert loaded.data == {"key": "k"} and loaded.config["train"] == {"steps": 3}
    manifest = json.loads((art.path / "artifact.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "config.json", "tokenizer.json", "data.json"}
