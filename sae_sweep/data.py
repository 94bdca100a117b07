"""Corpora -> tokenizer -> cached uint16 train/val token memmaps.

A prepared corpus is one folder, ``<cache>/tokens/<key>/``, holding ``train.bin`` and ``val.bin`` (flat uint16 token
ids, documents separated by the end-of-text token), ``tokenizer.json`` and ``meta.json``. The key is a digest of the
corpus content and every setting that changes the tokens, so a changed file or setting makes a new folder and an
unchanged one is reused. A folder is built under a temporary name and renamed into place when complete, under a
file lock, so concurrent jobs prepare it once and no job ever reads a half-written cache.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from sae_sweep import ConfigError, DataError
from sae_sweep.tokenizer import BPETokenizer, GPT2Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

CORPORA = ("embedded", "text_files", "openwebtext")
TOKENIZERS = ("bpe", "gpt2")
FORMAT_VERSION = 1  # bump when the cache layout or tokenization procedure changes
TRAIN_FILE, VAL_FILE, TOKENIZER_FILE, META_FILE = "train.bin", "val.bin", "tokenizer.json", "meta.json"
OWT_DATASET = "Skylion007/openwebtext"


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "embedded"  # embedded | text_files | openwebtext
    paths: tuple[str, ...] = ()  # text_files: glob patterns ("**" recurses), read as UTF-8
    tokenizer: str = "bpe"  # bpe (trained on the corpus) | gpt2 (tiktoken, as nanoGPT's OpenWebText prep)
    vocab_size: int = 4096  # bpe only; gpt2 is fixed at 50257
    val_fraction: float = 0.05  # every round(1/val_fraction)-th document goes to validation
    max_bytes: int | None = None  # keep only the first documents up to this many bytes (smoke runs)
    max_docs: int | None = None  # openwebtext only: the first N documents (the whole set is 8M)

    def __post_init__(self) -> None:
        if self.corpus not in CORPORA:
            raise ConfigError(f"data.corpus must be one of {CORPORA}, got {self.corpus!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"data.tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        if self.tokenizer == "bpe" and not 260 <= self.vocab_size <= 65536:
            raise ConfigError(
                f"data.vocab_size must be in [260, 65536] (256 bytes + specials, uint16 ids), got {self.vocab_size!r}"
            )
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"data.val_fraction must be in (0, 0.5), got {self.val_fraction!r}")
        if self.corpus == "text_files" and not self.paths:
            raise ConfigError(
                "data=text_files needs data.paths, a list of globs, e.g. data.paths='[\"/my/corpus/**/*.txt\"]'"
            )
        for name in ("max_bytes", "max_docs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"data.{name} must be a positive integer or null, got {value!r}")


# --------------------------------------------------------------------------------------------- corpora


def embedded_files() -> list[Path]:
    """The embedded default corpus: this Python's standard-library sources, tests excluded, sorted by path.

    Every machine that runs sae-sweep has them, so the default needs no download.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "__pycache__", "idle_test"}

    def keep(p: Path) -> bool:
        parts = p.relative_to(root).parts
        return not any(part in skip or part.startswith("test") for part in parts)

    return sorted((p for p in root.rglob("*.py") if keep(p)), key=lambda p: p.relative_to(root).as_posix())


def text_files(patterns: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        matched = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
        matched = [p for p in matched if p.is_file()]
        if not matched:
            raise DataError(
                f"data.paths: no file matches {pattern!r} (looked from {os.getcwd()}). "
                "Give an existing file or a glob such as '/data/books/**/*.txt'."
            )
        files.extend(matched)
    return list(dict.fromkeys(files))  # drop repeats, keep order


def _read_files(files: list[Path], max_bytes: int | None) -> list[tuple[str, str]]:
    docs, total = [], 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.append((path.name if len(files) == 1 else str(path), text))
        total += len(text.encode("utf-8"))
        if max_bytes is not None and total >= max_bytes:
            break
    return docs


def _require_network(host: str, what: str, fix: str) -> None:
    """Fail within a second, with a fix, when ``host`` cannot be reached or offline mode is on."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes") and "huggingface" in host:
            raise DataError(f"{what} needs the internet, but {var}={os.environ[var]} is set. {fix}")
    try:
        socket.create_connection((host, 443), timeout=1.0).close()
    except OSError as exc:
        raise DataError(f"{what} needs the internet and {host} cannot be reached ({exc}). {fix}") from None


def _openwebtext_docs(cfg: DataConfig) -> Iterator[tuple[str, str]]:
    fix = (
        "Connect to the internet once to download it, or use the embedded corpus (data=embedded) "
        "or your own files (data=text_files data.paths=...)."
    )
    try:
        import datasets  # noqa: PLC0415 - optional extra
    except ImportError:
        raise DataError("data=openwebtext needs the `datasets` package: pip install -e '.[openwebtext]'") from None
    _require_network("huggingface.co", f"data=openwebtext ({OWT_DATASET})", fix)
    split = "train" if cfg.max_docs is None else f"train[:{cfg.max_docs}]"
    ds = datasets.load_dataset(OWT_DATASET, split=split)
    for i, row in enumerate(ds):
        yield f"owt-{i}", row["text"]


# ------------------------------------------------------------------------------------------- the cache


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


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _settings_digest(cfg: DataConfig, corpus_digest: str) -> str:
    settings = {
        "format": FORMAT_VERSION,
        "corpus": cfg.corpus,
        "corpus_digest": corpus_digest,
        "tokenizer": cfg.tokenizer,
        "vocab_size": cfg.vocab_size if cfg.tokenizer == "bpe" else None,
        "val_fraction": cfg.val_fraction,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _docs_digest(docs: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, text in docs:
        h.update(name.encode() + b"\0" + text.encode("utf-8", errors="replace") + b"\0")
    return h.hexdigest()


def _split(docs: list[tuple[str, str]], val_fraction: float) -> tuple[list[str], list[str]]:
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


def _build(cfg: DataConfig, docs: list[tuple[str, str]], out: Path, key: str) -> None:
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
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"token cache {path} is unreadable ({exc}); delete the folder to rebuild it") from None
    if verify:
        for name, digest in meta["files"].items():
            if not (path / name).exists() or sha256_file(path / name) != digest:
                raise DataError(
                    f"token cache file {path / name} does not match the sha256 in {meta_path}: "
                    "it was truncated or edited. Delete the folder to rebuild it."
                )
    train = np.memmap(path / TRAIN_FILE, dtype=np.uint16, mode="r")
    val = np.memmap(path / VAL_FILE, dtype=np.uint16, mode="r")
    return TokenData(path, train, val, load_tokenizer(path / TOKENIZER_FILE), meta)


def prepare(cfg: DataConfig, cache_dir: str | Path, min_tokens: int = 0) -> TokenData:
    """Return the token cache for ``cfg``, building it first if needed (once, even across processes).

    ``min_tokens``: each split must hold more than this many tokens (the training block size), or a
    DataError says so before any training starts.
    """
    cache_dir = Path(cache_dir) / "tokens"
    if cfg.corpus == "openwebtext":
        # OpenWebText is identified by name and size, so a prepared cache is found without the network.
        corpus_digest = hashlib.sha256(f"{OWT_DATASET}:{cfg.max_docs}".encode()).hexdigest()
        docs = None
    else:
        files = embedded_files() if cfg.corpus == "embedded" else text_files(cfg.paths)
        docs = _read_files(files, cfg.max_bytes)
        corpus_digest = _docs_digest(docs)
    key = f"{cfg.corpus}-{cfg.tokenizer}-{_settings_digest(cfg, corpus_digest)[:16]}"
    final = cache_dir / key
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f".{key}.lock")):
        if not (final / META_FILE).exists():
            if docs is None:
                docs = list(_openwebtext_docs(cfg))
            tmp = cache_dir / f".{key}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                _build(cfg, docs, tmp, key)
                os.replace(tmp, final)  # the folder appears complete, or not at all
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
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
