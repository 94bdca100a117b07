"""Corpora: the text a GPT is pretrained on, as (name, text) documents, and the digest that identifies it.

``embedded`` (the default) is this Python's standard-library sources, so it needs no download; ``text_files`` reads
your own files; ``openwebtext`` (the note's corpus) streams from the Hugging Face hub and fails within a second,
with a fix, when the hub cannot be reached. ``tokens.py`` turns a corpus into a token cache.
"""

from __future__ import annotations

import glob
import hashlib
import os
import socket
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sae_sweep import rules
from sae_sweep.errors import ConfigError, DataError

CORPORA = ("embedded", "text_files", "openwebtext")
TOKENIZERS = ("bpe", "gpt2")
OWT_DATASET = "Skylion007/openwebtext"
Docs = list[tuple[str, str]]  # (name, text) per document


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
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"data.val_fraction must be in (0, 0.5), got {self.val_fraction!r}")
        for name in ("max_bytes", "max_docs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"data.{name} must be a positive integer or null, got {value!r}")
        rules.enforce(rules.View({"data": self}), at="section")  # vocab_size for bpe, paths for text_files


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


def read_files(files: list[Path], max_bytes: int | None) -> list[tuple[str, str]]:
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


def openwebtext_docs(cfg: DataConfig) -> Iterator[tuple[str, str]]:
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


def docs_digest(docs: Docs) -> str:
    h = hashlib.sha256()
    for name, text in docs:
        h.update(name.encode() + b"\0" + text.encode("utf-8", errors="replace") + b"\0")
    return h.hexdigest()


def read_corpus(cfg: DataConfig) -> tuple[Docs | None, str]:
    """The corpus's documents and its digest. OpenWebText is identified by name and size, so a prepared cache is
    found without the network: its documents are None here, and ``openwebtext_docs`` streams them when needed."""
    if cfg.corpus == "openwebtext":
        return None, hashlib.sha256(f"{OWT_DATASET}:{cfg.max_docs}".encode()).hexdigest()
    files = embedded_files() if cfg.corpus == "embedded" else text_files(cfg.paths)
    docs = read_files(files, cfg.max_bytes)
    return docs, docs_digest(docs)
