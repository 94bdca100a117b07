"""Tokenizers behind one small interface: a byte-level BPE trained on the corpus, or GPT-2's BPE via tiktoken.

Both give ``encode``, ``encode_batch``, ``decode``, ``vocab_size``, ``eot_id`` and ``save``; ``load_tokenizer`` reads
back what ``save`` wrote, so a token cache or a model folder carries its tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from sae_sweep.errors import DataError

EOT = "<|endoftext|>"  # separates documents in every token stream
TOKENIZER_FILE = "tokenizer.json"  # the file name in a token cache and a GPT folder


class BPETokenizer:
    """A byte-level BPE trained on the corpus with HF ``tokenizers``: lossless on any UTF-8 text."""

    kind = "bpe"

    def __init__(self, tok) -> None:
        self._tok = tok
        self.eot_id = tok.token_to_id(EOT)
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer  # noqa: PLC0415

        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self._tok.save(str(path))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)


class GPT2Tokenizer:
    """GPT-2's BPE through tiktoken. Its tables download once (to TIKTOKEN_CACHE_DIR) on first use."""

    kind = "gpt2"

    def __init__(self) -> None:
        try:
            import tiktoken  # noqa: PLC0415
        except ImportError:
            raise DataError("data.tokenizer=gpt2 needs tiktoken: pip install -e '.[openwebtext]'") from None
        try:
            self._enc = tiktoken.get_encoding("gpt2")
        except Exception as exc:  # tiktoken raises requests/OS errors when its tables cannot be fetched
            raise DataError(
                f"data.tokenizer=gpt2 could not load GPT-2's BPE tables ({type(exc).__name__}: {exc}). "
                "tiktoken downloads them once; connect to the internet for the first run, or set "
                "TIKTOKEN_CACHE_DIR to a folder that already holds them, or use data.tokenizer=bpe."
            ) from None
        self.eot_id = self._enc.eot_token
        self.vocab_size = self._enc.n_vocab

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"kind": "gpt2", "tiktoken_encoding": "gpt2"}) + "\n")

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts)

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids))


def load_tokenizer(path: str | Path) -> BPETokenizer | GPT2Tokenizer:
    """Load a tokenizer saved by ``save`` (a tokens cache or a model folder's ``tokenizer.json``)."""
    path = Path(path)
    head = json.loads(path.read_text())
    if head.get("kind") == "gpt2":
        return GPT2Tokenizer()
    return BPETokenizer.load(path)
