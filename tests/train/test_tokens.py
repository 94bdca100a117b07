import json
import os
import time

import numpy as np
import pytest

from sae_sweep import ConfigError, DataError
from sae_sweep.files import sha256_file
from sae_sweep.train import corpus as C
from sae_sweep.train import tokenizer as T
from sae_sweep.train import tokens as D
from sae_sweep.train.corpus import DataConfig
from sae_sweep.train.tokenizer import BPETokenizer
from sae_sweep.train.tokens import prepare

from ..conftest import SAMPLE


def small_cfg(corpus_dir, **kw) -> DataConfig:
    kw = {"val_fraction": 0.1, **kw}
    return DataConfig(corpus="text_files", paths=(str(corpus_dir / "*.txt"),), vocab_size=300, **kw)


def test_bpe_round_trip_is_lossless():
    tok = BPETokenizer.train([SAMPLE] * 20, vocab_size=300)
    text = SAMPLE + "unseen words: Zürich ½ ∑\n\n  trailing spaces  "
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges were learned and used
    assert tok.vocab_size == 300 and tok.decode([tok.eot_id]) == T.EOT


def test_bpe_save_load_gives_same_ids(tmp_path):
    tok = BPETokenizer.train([SAMPLE] * 20, vocab_size=300)
    tok.save(tmp_path / "t.json")
    again = T.load_tokenizer(tmp_path / "t.json")
    assert again.encode(SAMPLE) == tok.encode(SAMPLE)


def test_split_every_kth_document_and_single_document_tail():
    docs = [(str(i), f"d{i}") for i in range(10)]
    train, val = D._split(docs, 0.25)  # k = 4: documents 3 and 7 held out
    assert val == ["d3", "d7"] and train == ["d0", "d1", "d2", "d4", "d5", "d6", "d8", "d9"]
    train, val = D._split([("book", "abcdefghij")], 0.2)
    assert (train, val) == (["abcdefgh"], ["ij"])


def test_unigram_cross_entropy_exact():
    train = np.array([0, 0, 1], dtype=np.uint16)  # add-one counts: 3, 2 -> p = 0.6, 0.4
    val = np.array([0, 1], dtype=np.uint16)
    expected = -(np.log(0.6) + np.log(0.4)) / 2
    assert D.unigram_cross_entropy(train, val, vocab_size=2) == pytest.approx(expected, rel=1e-12)


def test_prepare_writes_tokens_and_reuses_cache(corpus_dir, tmp_path, monkeypatch):
    cfg = small_cfg(corpus_dir)
    first = prepare(cfg, tmp_path / "cache")
    assert first.train.dtype == np.uint16 and first.train.size > 100 and first.val.size > 10
    assert first.meta["n_docs"] == {"train": 27, "val": 3}  # 30 files, every 10th held out
    assert first.meta["n_tokens"]["train"] == first.train.size
    assert first.tokenizer.decode(first.val[: first.val.size]).count(T.EOT) == 3
    stamp = os.stat(first.path / "train.bin").st_mtime_ns

    calls = []
    monkeypatch.setattr(D, "_build", lambda *a: calls.append(a))
    second = prepare(cfg, tmp_path / "cache")
    assert calls == [] and second.path == first.path
    assert os.stat(second.path / "train.bin").st_mtime_ns == stamp
    np.testing.assert_array_equal(second.train, first.train)


def test_changed_corpus_or_setting_gets_a_new_cache(corpus_dir, tmp_path):
    base = prepare(small_cfg(corpus_dir), tmp_path / "cache")
    other_vocab = prepare(small_cfg(corpus_dir, val_fraction=0.2), tmp_path / "cache")
    (corpus_dir / "doc00.txt").write_text("changed text " * 50)
    edited = prepare(small_cfg(corpus_dir), tmp_path / "cache")
    assert len({base.key, other_vocab.key, edited.key}) == 3


def test_token_prep_is_deterministic(corpus_dir, tmp_path):
    a = prepare(small_cfg(corpus_dir), tmp_path / "a")
    b = prepare(small_cfg(corpus_dir), tmp_path / "b")
    assert a.key == b.key
    for name in ("train.bin", "val.bin", "tokenizer.json"):
        assert (a.path / name).read_bytes() == (b.path / name).read_bytes()


def test_interrupted_prep_leaves_no_trusted_cache(corpus_dir, tmp_path, monkeypatch):
    real = D._write_tokens

    def dies_after_train(tokenizer, docs, path, chunk=256):
        if path.name == "val.bin":
            raise KeyboardInterrupt("killed mid-write")
        return real(tokenizer, docs, path, chunk)

    monkeypatch.setattr(D, "_write_tokens", dies_after_train)
    with pytest.raises(KeyboardInterrupt):
        prepare(small_cfg(corpus_dir), tmp_path / "cache")
    tokens_dir = tmp_path / "cache" / "tokens"
    assert [p.name for p in tokens_dir.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.setattr(D, "_write_tokens", real)
    data = prepare(small_cfg(corpus_dir), tmp_path / "cache")
    assert data.val.size > 0


def test_edited_cache_file_is_detected(corpus_dir, tmp_path):
    data = prepare(small_cfg(corpus_dir), tmp_path / "cache")
    with open(data.path / "train.bin", "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xff")
    with pytest.raises(DataError, match=r"train\.bin does not match the sha256"):
        prepare(small_cfg(corpus_dir), tmp_path / "cache")


def test_missing_corpus_path_names_the_pattern(tmp_path):
    with pytest.raises(DataError, match=r"no file matches '.*nowhere/\*\.txt'"):
        prepare(DataConfig(corpus="text_files", paths=(str(tmp_path / "nowhere/*.txt"),)), tmp_path)


def test_corpus_shorter_than_one_block_is_refused(corpus_dir, tmp_path):
    msg = r"the train split of text_files has \d+ tokens, fewer than one block of 100000"
    with pytest.raises(DataError, match=msg):
        prepare(small_cfg(corpus_dir), tmp_path / "cache", min_tokens=100_000)


def test_empty_corpus_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        prepare(DataConfig(corpus="text_files", paths=(str(tmp_path / "empty.txt"),), vocab_size=300), tmp_path)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"corpus": "books"}, "data.corpus"),
        ({"tokenizer": "sentencepiece"}, "data.tokenizer"),
        ({"vocab_size": 100}, "data.vocab_size"),
        ({"val_fraction": 0.0}, "data.val_fraction"),
        ({"corpus": "text_files"}, "data.paths"),
        ({"max_bytes": 0}, "data.max_bytes"),
    ],
)
def test_bad_data_config_names_the_key(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        DataConfig(**kw)


def test_openwebtext_offline_fails_fast_with_a_fix(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DataError) as err:
        prepare(DataConfig(corpus="openwebtext", tokenizer="gpt2", val_fraction=0.0005), tmp_path)
    assert time.perf_counter() - t0 < 1.5
    msg = str(err.value)
    assert "openwebtext" in msg and ("HF_HUB_OFFLINE" in msg or "cannot be reached" in msg or "datasets" in msg)


def test_embedded_corpus_is_stdlib_without_tests():
    files = C.embedded_files()
    names = {f.name for f in files}
    assert "os.py" in names and "json" in {f.parent.name for f in files}
    assert not any(part.startswith("test") for f in files for part in f.parts[-3:])
    assert [f.as_posix() for f in files] == sorted(f.as_posix() for f in files)
    assert sum(f.stat().st_size for f in files) > 5_000_000


def test_meta_records_sha256_of_every_file(corpus_dir, tmp_path):
    data = prepare(small_cfg(corpus_dir), tmp_path / "cache")
    meta = json.loads((data.path / "meta.json").read_text())
    assert set(meta["files"]) == {"train.bin", "val.bin", "tokenizer.json"}
    assert meta["files"]["val.bin"] == sha256_file(data.path / "val.bin")
