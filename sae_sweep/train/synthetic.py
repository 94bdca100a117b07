"""Synthetic activations whose true features are known: the ground truth that GPT activations cannot give.

Each activation is a sparse non-negative combination of ``n_features`` fixed unit directions in ``d_in`` dimensions
(``truth.true_features``), plus isotropic Gaussian noise::

    x = sum_i a_i f_i + noise,   a_i = m_i * [feature i is active],   m_i >= 0

Each feature is active independently with probability ``active / n_features``, so ``active`` is the expected L0.
The activations are written as an activation cache (``sae_sweep/activations.py``), so the SAE stage and the analysis
take them unchanged; the true features go to the artifact store first (``truth.save_true_features``).

Rows are generated in blocks of ``BLOCK_ROWS``, each from its own seeded generator, so the data is a pure function of
the config: the same whatever chunks it is written in, and the same on every machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sae_sweep.activations import Activations, new_rows, write_cache
from sae_sweep.errors import ConfigError, DataError
from sae_sweep.files import json_digest
from sae_sweep.store import Artifact, ArtifactStore, file_digest
from sae_sweep.truth import FEATURES_FILE, FORMAT_VERSION, SyntheticConfig, save_true_features

log = logging.getLogger(__name__)

BLOCK_ROWS = 4096  # rows per independently seeded block
CHUNK_ROWS = 1 << 16  # rows generated and written at a time (memory only: the data does not depend on it)
_SPLITS = {"train": 1, "val": 2}  # random streams: [seed, stream, block]; stream 0 made the features


def _block(cfg: SyntheticConfig, features: np.ndarray, stream: int, b: int):
    """Block ``b`` of a split: BLOCK_ROWS activations (float32) and their true codes as (rows, cols, magnitudes)."""
    rng = np.random.default_rng([cfg.seed, stream, b])
    cells = BLOCK_ROWS * cfg.n_features
    # Independent Bernoulli(p) cells = a Binomial count of them, at a uniformly random set of positions.
    pos = np.sort(rng.choice(cells, size=rng.binomial(cells, cfg.p_active), replace=False))
    if cfg.magnitude == "exponential":
        mags = rng.exponential(1.0, pos.size)
    elif cfg.magnitude == "uniform":
        mags = rng.uniform(0.0, 2.0, pos.size)
    else:
        mags = np.ones(pos.size)
    mags = mags.astype(np.float32)
    rows, cols = np.divmod(pos, cfg.n_features)  # row-major positions: rows ascending, columns ascending within a row
    x = _combine(rows, cols, mags, features)
    if cfg.noise > 0:
        x += np.float32(cfg.noise) * rng.standard_normal((BLOCK_ROWS, cfg.d_in), dtype=np.float32)
    return x, (rows, cols, mags)


def _combine(rows: np.ndarray, cols: np.ndarray, mags: np.ndarray, features: np.ndarray) -> np.ndarray:
    """x[r] = sum over the active (r, c) of mags * features[c], (BLOCK_ROWS, d_in) float32.

    Summed in float32 one active feature per row at a time, in column order, each product rounded before it is
    added: the order and roundings of a CSR-times-dense product, so the data is the same as when it was built
    with scipy.sparse (which training no longer imports).
    """
    x = np.zeros((BLOCK_ROWS, features.shape[1]), dtype=np.float32)
    if rows.size == 0:
        return x
    rank = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")  # k: the row's k-th active feature
    for k in range(int(rank.max()) + 1):
        sel = rank == k  # at most one entry per row
        x[rows[sel]] += mags[sel, None] * features[cols[sel]]
    return x


@dataclass(frozen=True)
class TrueCodes:
    """The true codes of some rows, as coordinates: x[rows[i]] has feature cols[i] active with magnitude values[i]."""

    rows: np.ndarray  # (nnz,) int64, ascending; columns ascending within a row
    cols: np.ndarray  # (nnz,) int64
    values: np.ndarray  # (nnz,) float32, > 0
    shape: tuple[int, int]  # (n_rows, n_features)

    def toarray(self) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=np.float32)
        dense[self.rows, self.cols] = self.values
        return dense


def sample(cfg: SyntheticConfig, features: np.ndarray, split: str, start: int, stop: int):
    """Rows ``start:stop`` of ``split`` ("train" or "val"): activations (stop - start, d_in) float32 and their
    ``TrueCodes``, with x = codes @ features + noise."""
    x, (rows, cols, mags) = _rows(cfg, features, split, start, stop)
    return x, TrueCodes(rows, cols, mags, (stop - start, cfg.n_features))


def _rows(cfg: SyntheticConfig, features: np.ndarray, split: str, start: int, stop: int):
    """Rows ``start:stop`` of ``split``: activations and the (rows, cols, magnitudes) of their codes."""
    if split not in _SPLITS:
        raise ConfigError(f"split must be one of {tuple(_SPLITS)}, got {split!r}")
    first, last = start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS
    lo = start - first * BLOCK_ROWS
    xs, rs, cs, ms = [], [], [], []
    for b in range(first, last + 1):
        x, (r, c, m) = _block(cfg, features, _SPLITS[split], b)
        xs.append(x)
        r = r + (b - first) * BLOCK_ROWS - lo  # row within the requested range
        keep = (r >= 0) & (r < stop - start)
        rs.append(r[keep]), cs.append(c[keep]), ms.append(m[keep])
    x = np.concatenate(xs)[lo : lo + stop - start]
    return x, (np.concatenate(rs), np.concatenate(cs), np.concatenate(ms))


def _write_split(cfg: SyntheticConfig, features: np.ndarray, split: str, n: int, path: Path, chunk: int) -> None:
    out = new_rows(path, n, cfg.d_in)
    for lo in range(0, n, chunk):
        out[lo : min(n, lo + chunk)] = _rows(cfg, features, split, lo, min(n, lo + chunk))[0]
    out.flush()
    del out


def cache_key(cfg: SyntheticConfig, n_train: int, n_val: int) -> str:
    ident = {
        "format": FORMAT_VERSION,
        "block": BLOCK_ROWS,
        "synthetic": cfg.recorded(),
        "n_train": n_train,
        "n_val": n_val,
    }
    return f"synthetic-F{cfg.n_features}-N{n_train}-{json_digest(ident)[:16]}"


def synthetic_activations(
    cfg: SyntheticConfig, n_train: int, n_val: int, cache_dir: str | Path, store: ArtifactStore, chunk: int = CHUNK_ROWS
) -> tuple[Activations, Artifact]:
    """The activation cache of ``cfg`` with ``n_train`` + ``n_val`` rows, and the artifact of its true features.

    Both are built on first use and reused after. The rows are generated from the stored features, so the cache and
    the ground truth the analysis reads always agree.
    """
    art = save_true_features(store, cfg)
    features = np.load(art.path / FEATURES_FILE)
    if features.shape != (cfg.n_features, cfg.d_in):
        raise DataError(f"{art.path / FEATURES_FILE} holds {features.shape}, not ({cfg.n_features}, {cfg.d_in})")

    def fill(folder: Path) -> dict:
        _write_split(cfg, features, "train", n_train, folder / "train.npy", chunk)
        _write_split(cfg, features, "val", n_val, folder / "val.npy", chunk)
        return {
            "synthetic": cfg.recorded(),
            "features": {"artifact": art.ref, "digest": file_digest(art, FEATURES_FILE)},
            "n_tokens": n_train,
            "n_val_tokens": n_val,
            "d_in": cfg.d_in,
            "dtype": "float16",
        }

    describe = f"generated {n_train} + {n_val} synthetic activations ({cfg.n_features} true features)"
    return write_cache(cache_dir, cache_key(cfg, n_train, n_val), fill, describe), art
