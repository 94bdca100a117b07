"""One layer's MLP activations of a trained GPT -> a float16 memmap cache, built once per key.

The cache folder ``<cache>/activations/<key>/`` holds ``train.npy`` and ``val.npy`` ((N, d_in) float16)
and ``meta.json`` (shapes, provenance and the sha256 of each file). The key is a digest of the GPT's weights, the
layer, the corpus and the counts, so jobs of a sweep share one harvest. As with token caches, it is built under a
temporary name and renamed under a file lock: concurrent jobs wait for the one that builds it, and none reads a
half-written cache. No Lightning here: harvesting is a plain forward pass with a hook.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from sae_sweep import ConfigError, DataError
from sae_sweep.data import TokenData, sha256_file
from sae_sweep.model import GPT

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
META_FILE = "meta.json"


@dataclass(frozen=True)
class HarvestConfig:
    layer: int = 2  # the note's layer-2 MLP
    n_tokens: int = 1_000_000  # training activations, one per token position
    n_val_tokens: int = 100_000  # held-out activations (feature firing counts, evaluation)
    batch_size: int = 64  # sequences per forward pass
    seed: int = 0  # which windows of the corpus are read

    def __post_init__(self) -> None:
        for name in ("n_tokens", "n_val_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"harvest.{name} must be a positive integer, got {value!r}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise ConfigError(f"harvest.layer must be a non-negative integer, got {self.layer!r}")


@dataclass
class Activations:
    path: Path
    train: np.ndarray  # (n_tokens, d_in) float16 memmap
    val: np.ndarray  # (n_val_tokens, d_in) float16 memmap
    meta: dict

    @property
    def d_in(self) -> int:
        return self.train.shape[1]

    @property
    def key(self) -> str:
        return self.meta["key"]


@torch.no_grad()
def mlp_activations(model: GPT, idx: torch.Tensor, layer: int) -> torch.Tensor:
    """(B, T) token ids -> (B * T, d_mlp) post-GELU activations of ``layer``'s MLP."""
    seen: list[torch.Tensor] = []
    handle = model.mlp_act(layer).register_forward_hook(lambda mod, inp, out: seen.append(out))
    try:
        model(idx)
    finally:
        handle.remove()
    return seen[0].reshape(-1, seen[0].shape[-1])


def _fill(model: GPT, tokens: np.ndarray, layer: int, n: int, cfg: HarvestConfig, seed: int, path: Path) -> None:
    """Write ``n`` activation rows from random windows of ``tokens`` to ``path`` as float16."""
    T = model.config.block_size
    if tokens.size <= T:
        raise DataError(f"the corpus split has {tokens.size} tokens, fewer than one block of {T} + 1")
    device = next(model.parameters()).device
    rng = np.random.default_rng([seed, layer])
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, model.config.d_mlp))
    done = 0
    while done < n:
        starts = rng.integers(0, tokens.size - T, size=cfg.batch_size)
        idx = torch.from_numpy(np.stack([tokens[s : s + T] for s in starts]).astype(np.int64)).to(device)
        acts = mlp_activations(model, idx, layer)[: n - done]
        out[done : done + len(acts)] = acts.to(torch.float16).cpu().numpy()
        done += len(acts)
    out.flush()
    del out


def cache_key(model_digest: str, tokens_key: str, cfg: HarvestConfig) -> str:
    ident = {"format": FORMAT_VERSION, "model": model_digest, "tokens": tokens_key, **asdict(cfg)}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return f"L{cfg.layer}-N{cfg.n_tokens}-{digest}"


def open_activations(path: Path, verify: bool = True) -> Activations:
    meta = json.loads((path / META_FILE).read_text())
    if verify:
        for name, digest in meta["files"].items():
            if sha256_file(path / name) != digest:
                raise DataError(
                    f"activation cache file {path / name} does not match the sha256 in its meta.json "
                    "(truncated or edited): delete the folder to harvest again"
                )
    train = np.load(path / "train.npy", mmap_mode="r")
    val = np.load(path / "val.npy", mmap_mode="r")
    return Activations(path, train, val, meta)


def write_cache(cache_dir: str | Path, key: str, fill: Callable[[Path], dict], describe: str) -> Activations:
    """Return the activation cache ``<cache_dir>/activations/<key>``, building it first if it is not there.

    ``fill(folder)`` writes ``train.npy`` and ``val.npy`` into a temporary folder and returns what meta.json should
    say about them; the folder is then sealed (sha256 of each file) and renamed into place, all under a file lock, so
    concurrent jobs build a key once and nobody reads a half-written cache. Harvesting and synthetic data share this.
    """
    root = Path(cache_dir) / "activations"
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    with FileLock(str(root / f".{key}.lock")):
        if not (final / META_FILE).exists():
            tmp = root / f".{key}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                t0 = time.perf_counter()
                meta = {"format": FORMAT_VERSION, "key": key, **fill(tmp)}
                meta["files"] = {name: sha256_file(tmp / name) for name in ("train.npy", "val.npy")}
                meta["seconds"] = round(time.perf_counter() - t0, 2)
                (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
                os.replace(tmp, final)
                log.info("%s in %.1fs -> %s", describe, meta["seconds"], final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            log.info("reusing activation cache %s", final)
    return open_activations(final)


def harvest(model: GPT, model_digest: str, tokens: TokenData, cfg: HarvestConfig, cache_dir: str | Path) -> Activations:
    """Return the activation cache for (model, layer, corpus, counts), harvesting it first if needed."""
    model.mlp_act(cfg.layer)  # a layer outside the model fails here, before any work

    def fill(folder: Path) -> dict:
        was_training = model.training
        model.eval()
        _fill(model, tokens.train, cfg.layer, cfg.n_tokens, cfg, cfg.seed, folder / "train.npy")
        _fill(model, tokens.val, cfg.layer, cfg.n_val_tokens, cfg, cfg.seed + 1, folder / "val.npy")
        model.train(was_training)
        return {
            "model_digest": model_digest,
            "tokens_key": tokens.key,
            "config": asdict(cfg),
            "d_in": model.config.d_mlp,
            "dtype": "float16",
        }

    describe = f"harvested {cfg.n_tokens} + {cfg.n_val_tokens} activations of layer {cfg.layer}"
    return write_cache(cache_dir, cache_key(model_digest, tokens.key, cfg), fill, describe)
