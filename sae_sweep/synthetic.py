"""Synthetic activations whose true features are known: the ground truth that GPT activations cannot give.

Each activation is a sparse non-negative combination of ``n_features`` fixed unit directions in ``d_in`` dimensions,
plus isotropic Gaussian noise::

    x = sum_i a_i f_i + noise,   a_i = m_i * [feature i is active],   m_i >= 0

Each feature is active independently with probability ``active / n_features``, so ``active`` is the expected L0.
The activations are written as an activation cache in exactly harvest.py's format (float16 ``train.npy`` and
``val.npy`` + ``meta.json``), so the SAE stage and the analysis take them unchanged; the true features go to the
artifact store (type ``synthetic-features``), where the analysis finds them from a dictionary's config.json.

Rows are generated in blocks of ``BLOCK_ROWS``, each from its own seeded generator, so the data is a pure function of
the config: the same whatever chunks it is written in, and the same on every machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from scipy import sparse

from sae_sweep import ConfigError, DataError
from sae_sweep.artifacts import Artifact, ArtifactStore
from sae_sweep.harvest import Activations, write_cache

log = logging.getLogger(__name__)

CORPUS = "synthetic"  # data.corpus of conf/data/synthetic.yaml
MAGNITUDES = ("exponential", "uniform", "constant")
FEATURES_TYPE = "synthetic-features"
FEATURES_FILE, CONFIG_FILE = "features.npy", "config.json"
FORMAT_VERSION = 1  # bump when the generating procedure changes: it is part of every cache key
BLOCK_ROWS = 4096  # rows per independently seeded block
CHUNK_ROWS = 1 << 16  # rows generated and written at a time (memory only: the data does not depend on it)
_FEATURES, _SPLITS = 0, {"train": 1, "val": 2}  # random streams: [seed, stream, block]


@dataclass(frozen=True)
class SyntheticConfig:
    corpus: str = CORPUS  # the data group's switch: these activations are generated, not harvested from a GPT
    n_features: int = 512  # true features (unit directions): the count a dictionary should find
    d_in: int = 128  # activation width, as the GPT's layer-2 MLP
    active: float = 8.0  # expected number of active features per activation (each is on with p = active/n_features)
    magnitude: str = "exponential"  # law of an active feature's coefficient, all with mean 1:
    #                                 exponential (many small, a few large) | uniform (on [0, 2]) | constant (1)
    noise: float = 0.05  # std of the isotropic Gaussian noise added to each coordinate; 0: exact combinations
    seed: int = 0  # the features and the samples

    def __post_init__(self) -> None:
        if self.corpus != CORPUS:
            raise ConfigError(f"data.corpus must be {CORPUS!r} for synthetic data, got {self.corpus!r}")
        for name in ("n_features", "d_in"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"data.seed must be a non-negative integer, got {self.seed!r}")
        if isinstance(self.active, bool) or not (0 < self.active <= self.n_features):  # also refuses NaN
            raise ConfigError(
                f"data.active (expected active features per activation) must be in (0, data.n_features="
                f"{self.n_features}], got {self.active!r}"
            )
        if self.magnitude not in MAGNITUDES:
            raise ConfigError(f"data.magnitude must be one of {MAGNITUDES}, got {self.magnitude!r}")
        if isinstance(self.noise, bool) or not (0 <= self.noise and math.isfinite(self.noise)):
            raise ConfigError(f"data.noise (a standard deviation) must be a finite number >= 0, got {self.noise!r}")

    @property
    def p_active(self) -> float:
        return self.active / self.n_features

    @classmethod
    def from_dict(cls, values: dict) -> SyntheticConfig:
        """The config recorded in a dictionary's config.json (extra keys, such as ``features``, are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def _digest(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------------ generation


def true_features(cfg: SyntheticConfig) -> np.ndarray:
    """(n_features, d_in) float32: the true features, seeded Gaussian directions scaled to unit length."""
    rng = np.random.default_rng([cfg.seed, _FEATURES, 0])
    f = rng.standard_normal((cfg.n_features, cfg.d_in))
    return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


def _block(cfg: SyntheticConfig, features: np.ndarray, stream: int, b: int) -> tuple[np.ndarray, sparse.csr_matrix]:
    """Block ``b`` of a split: BLOCK_ROWS activations (float32) and their true codes."""
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
    rows, cols = np.divmod(pos, cfg.n_features)
    codes = sparse.csr_matrix((mags.astype(np.float32), (rows, cols)), shape=(BLOCK_ROWS, cfg.n_features))
    x = np.asarray(codes @ features, dtype=np.float32)  # (BLOCK_ROWS, d_in)
    if cfg.noise > 0:
        x += np.float32(cfg.noise) * rng.standard_normal((BLOCK_ROWS, cfg.d_in), dtype=np.float32)
    return x, codes


def sample(
    cfg: SyntheticConfig, features: np.ndarray, split: str, start: int, stop: int
) -> tuple[np.ndarray, sparse.csr_matrix]:
    """Rows ``start:stop`` of ``split`` ("train" or "val"): activations (stop - start, d_in) float32 and their true
    codes (stop - start, n_features), a sparse matrix with x = codes @ features + noise."""
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {tuple(_SPLITS)}, got {split!r}")
    first, last = start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS
    blocks = [_block(cfg, features, _SPLITS[split], b) for b in range(first, last + 1)]
    lo = start - first * BLOCK_ROWS
    x = np.concatenate([x for x, _ in blocks])[lo : lo + stop - start]
    codes = sparse.vstack([c for _, c in blocks], format="csr")[lo : lo + stop - start]
    return x, codes


def _write_split(cfg: SyntheticConfig, features: np.ndarray, split: str, n: int, path: Path, chunk: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, cfg.d_in))
    for lo in range(0, n, chunk):
        out[lo : min(n, lo + chunk)] = sample(cfg, features, split, lo, min(n, lo + chunk))[0]
    out.flush()
    del out


# ------------------------------------------------------------------------------- the cache and the truth


def cache_key(cfg: SyntheticConfig, n_train: int, n_val: int) -> str:
    ident = {
        "format": FORMAT_VERSION,
        "block": BLOCK_ROWS,
        "synthetic": asdict(cfg),
        "n_train": n_train,
        "n_val": n_val,
    }
    return f"synthetic-F{cfg.n_features}-N{n_train}-{_digest(ident)[:16]}"


def features_name(cfg: SyntheticConfig) -> str:
    """``synthetic-features-<digest>``: one artifact per generating process (whatever the number of samples)."""
    return f"synthetic-features-{_digest({'format': FORMAT_VERSION, **asdict(cfg)})[:10]}"


def save_true_features(store: ArtifactStore, cfg: SyntheticConfig) -> Artifact:
    """The ``synthetic-features`` artifact of ``cfg`` (features.npy + config.json), saved once and then reused.

    A file lock makes concurrent jobs of a sweep save it once, as one version.
    """
    name = features_name(cfg)
    store.root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(store.root / f".{name}.lock")):
        if name in store.names(FEATURES_TYPE):
            return store.get(name)
        features = true_features(cfg)

        def write(folder: Path) -> None:
            np.save(folder / FEATURES_FILE, features)
            (folder / CONFIG_FILE).write_text(json.dumps(asdict(cfg), indent=2) + "\n")

        metadata = {"synthetic": asdict(cfg), "shape": list(features.shape), "orientation": "rows are features"}
        return store.save(name, FEATURES_TYPE, write, metadata)


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
            "synthetic": asdict(cfg),
            "features": {"artifact": art.ref, "digest": _features_digest(art)},
            "n_tokens": n_train,
            "n_val_tokens": n_val,
            "d_in": cfg.d_in,
            "dtype": "float16",
        }

    describe = f"generated {n_train} + {n_val} synthetic activations ({cfg.n_features} true features)"
    return write_cache(cache_dir, cache_key(cfg, n_train, n_val), fill, describe), art


def _features_digest(art: Artifact) -> str:
    """The sha256 of the features file, as the artifact's manifest records it."""
    return json.loads((art.path / "artifact.json").read_text())["files"][FEATURES_FILE]


def load_true_features(store: ArtifactStore | None, dictionary_config: dict) -> np.ndarray | None:
    """The true features (n_features, d_in) behind a dictionary trained on synthetic data; None for any other.

    Read from the ``synthetic-features`` artifact its config.json names; if that store does not hold it (a
    dictionary pulled from W&B or a colleague's folder), regenerated from the recorded config, which is exact.
    """
    recorded = dictionary_config.get("synthetic")
    if not recorded:
        return None
    cfg = SyntheticConfig.from_dict(recorded)
    ref = recorded.get("features")
    if store is not None and ref:
        try:
            return np.load(store.get(ref).path / FEATURES_FILE)
        except DataError as exc:
            log.info(
                "true features %s not read from %s (%s); regenerated from the recorded config", ref, store.root, exc
            )
    return true_features(cfg)
