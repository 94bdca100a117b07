"""One layer's MLP activations of a trained GPT -> an activation cache (``sae_sweep/activations.py``).

The cache key is a digest of the GPT's weights, the layer, the corpus and the counts, so the jobs of a sweep share
one harvest: the first builds it, the others wait and reuse it. No Lightning here: harvesting is a plain forward pass
with a hook on the MLP's activation module.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sae_sweep.activations import FORMAT_VERSION, Activations, new_rows, write_cache
from sae_sweep.errors import ConfigError, DataError
from sae_sweep.files import json_digest
from sae_sweep.train.gpt import GPT
from sae_sweep.train.tokens import TokenData

log = logging.getLogger(__name__)


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
        if not 0 <= self.seed < 2**63:  # numpy's seed: a negative one fails inside the harvest
            raise ConfigError(f"harvest.seed must be an integer in [0, 2^63), got {self.seed!r}")


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
    out = new_rows(path, n, model.config.d_mlp)
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
    digest = json_digest(ident)[:16]
    return f"L{cfg.layer}-N{cfg.n_tokens}-{digest}"


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
