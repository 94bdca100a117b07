"""Corpus -> tokenizer -> a cached pair of uint16 train/val token files.

A prepared corpus is one folder, ``<cache>/tokens/<key>/``, holding ``train.bin`` and ``val.bin`` (flat uint16 token
ids, documents separated by the end-of-text token), ``tokenizer.json`` and ``meta.json``. The key is a digest of the
corpus content and every setting that changes the tokens, so a changed file or setting makes a new folder and an
unchanged one is reused. It is built once (``files.build_once``), so concurrent jobs prepare it once and no job ever
reads a half-written cache.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sae_sweep.errors import DataError
from sae_sweep.files import build_once, json_digest, read_json, sealed_files, sha256_file, verify_files
from sae_sweep.train.corpus import DataConfig, Docs, openwebtext_docs, read_corpus
from sae_sweep.train.tokenizer import TOKENIZER_FILE, BPETokenizer, GPT2Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the cache layout or tokenization procedure changes
TRAIN_FILE, VAL_FILE, META_FILE = "train.bin", "val.bin", "meta.json"


@dataclass
class TokenData:
    """A prepared corpus: train/val token memmaps, their tokenizer and their metadata."""

    path: Path
    train: np.ndarray  # (n_train,) uint16 memmap
    val: np.ndarray  # (n_val,) uint16 memmap
    tokenizer: BPETokenizer | GPT2Tokenizer
    meta: dict = field(repr=False)

    @property
    def key(self) -> str:
        return self.meta["key"]


def _settings_digest(cfg: DataConfig, corpus_digest: str) -> str:
    settings = {
        "format": FORMAT_VERSION,
        "corpus": cfg.corpus,
        "corpus_digest": corpus_digest,
        "tokenizer": cfg.tokenizer,
        "vocab_size": cfg.vocab_size if cfg.tokenizer == "bpe" else None,
        "val_fraction": cfg.val_fraction,
    }
    return json_digest(settings)


def _split(docs: Docs, val_fraction: float) -> tuple[list[str], list[str]]:
    """Train and validation texts: every k-th document (k = round(1 / val_fraction)) is held out.

    A corpus of fewer than k documents (a single book, say) holds out the last val_fraction of each one instead.
    """
    k = max(2, round(1 / val_fraction))
    texts = [text for _, text in docs]
    if len(texts) >= k:
        return [t for i, t in enumerate(texts) if i % k != k - 1], texts[k - 1 :: k]
    cuts = [int(len(t) * (1 - val_fraction)) for t in texts]
    return [t[:c] for t, c in zip(texts, cuts, strict=True)], [t[c:] for t, c in zip(texts, cuts, strict=True)]


def _write_tokens(tokenizer, docs: list[str], path: Path, chunk: int = 256) -> int:
    """Encode ``docs`` in chunks and append them, each followed by EOT, to a uint16 file; return the count."""
    n = 0
    with open(path, "wb") as f:
        for i in range(0, len(docs), chunk):
            for ids in tokenizer.encode_batch(docs[i : i + chunk]):
                arr = np.asarray([*ids, tokenizer.eot_id], dtype=np.uint16)
                f.write(arr.tobytes())
                n += arr.size
    return n


def unigram_cross_entropy(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of val under the train split's add-one-smoothed unigram frequencies.

    The loss a model that ignores context would reach: a trained GPT's val loss should be well below it.
    """
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val].mean())


def _build(cfg: DataConfig, docs: Docs, out: Path, key: str) -> None:
    train_texts, val_texts = _split(docs, cfg.val_fraction)
    if not any(val_texts) or not any(train_texts):
        raise DataError("the corpus is empty: give files that contain text")
    log.info("preparing tokens: %d train / %d val documents", len(train_texts), len(val_texts))
    if cfg.tokenizer == "bpe":
        tokenizer = BPETokenizer.train(train_texts, cfg.vocab_size)  # val text never shapes the tokenizer
    else:
        tokenizer = GPT2Tokenizer()
    tokenizer.save(out / TOKENIZER_FILE)
    n_train = _write_tokens(tokenizer, train_texts, out / TRAIN_FILE)
    n_val = _write_tokens(tokenizer, val_texts, out / VAL_FILE)
    train = np.fromfile(out / TRAIN_FILE, dtype=np.uint16)
    val = np.fromfile(out / VAL_FILE, dtype=np.uint16)
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "config": asdict(cfg),
        "python": sys.version.split()[0],
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id},
        "n_docs": {"train": len(train_texts), "val": len(val_texts)},
        "n_tokens": {"train": n_train, "val": n_val},
        "n_bytes": sum(len(t.encode("utf-8")) for _, t in docs),
        "unigram_entropy": unigram_cross_entropy(train, val, tokenizer.vocab_size),
        "files": {name: sha256_file(out / name) for name in (TRAIN_FILE, VAL_FILE, TOKENIZER_FILE)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _open(path: Path, verify: bool = True) -> TokenData:
    fix = f"Delete {path} to rebuild it."
    meta = read_json(path / META_FILE, "the token cache's seal", fix, {"key": str, "files": dict})
    files = sealed_files(meta, path / META_FILE, "the token cache's seal", fix, (TRAIN_FILE, VAL_FILE, TOKENIZER_FILE))
    if verify:
        verify_files(path, files, "token cache", fix)
    train = np.memmap(path / TRAIN_FILE, dtype=np.uint16, mode="r")
    val = np.memmap(path / VAL_FILE, dtype=np.uint16, mode="r")
    return TokenData(path, train, val, load_tokenizer(path / TOKENIZER_FILE), meta)


def prepare(cfg: DataConfig, cache_dir: str | Path, min_tokens: int = 0) -> TokenData:
    """Return the token cache for ``cfg``, building it first if needed (once, even across processes).

    ``min_tokens``: each split must hold more than this many tokens (the training block size), or a
    DataError says so before any training starts.
    """
    docs, corpus_digest = read_corpus(cfg)
    key = f"{cfg.corpus}-{cfg.tokenizer}-{_settings_digest(cfg, corpus_digest)[:16]}"
    final = Path(cache_dir) / "tokens" / key

    def build(tmp: Path) -> None:
        _build(cfg, docs if docs is not None else list(openwebtext_docs(cfg)), tmp, key)

    if not build_once(final, build, ready=META_FILE):
        log.info("reusing token cache %s", final)
    data = _open(final)
    for split, arr in (("train", data.train), ("val", data.val)):
        if arr.size <= min_tokens:
            raise DataError(
                f"the {split} split of {cfg.corpus} has {arr.size} tokens, fewer than one block of "
                f"{min_tokens} + 1: use a larger corpus or a smaller model.block_size"
            )
    return data


def open_prepared(meta: dict, cache_dir: str | Path) -> TokenData:
    """The token cache a model was trained on, from the ``meta.json`` it recorded; rebuilt if it was deleted."""
    path = Path(cache_dir) / "tokens" / meta["key"]
    if (path / META_FILE).exists():
        return _open(path)
    config = dict(meta["config"])
    config["paths"] = tuple(config.get("paths") or ())
    data = prepare(DataConfig(**config), cache_dir)
    if data.key != meta["key"]:
        raise DataError(
            f"the corpus the GPT was trained on (token cache {meta['key']}) has changed since: it now gives "
            f"{data.key}. Restore the corpus, or pretrain again on the new one."
        )
    return data
