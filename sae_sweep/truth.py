"""Known ground truth: the true features behind synthetic activations, their artifact, and how analysis finds them.

``SyntheticConfig`` describes a generating process (``conf/data/synthetic.yaml``); its true features are a pure
function of it (``true_features``). Training saves them once as a ``synthetic-features`` artifact before generating
the activations from them (``train/synthetic.py``); the analysis reads them back through the dictionary's
config.json (``load_true_features``), or regenerates them exactly when that store is not at hand.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sae_sweep import rules
from sae_sweep.errors import ConfigError, DataError
from sae_sweep.files import json_digest
from sae_sweep.store import Artifact, ArtifactStore

log = logging.getLogger(__name__)

CORPUS = "synthetic"  # data.corpus of conf/data/synthetic.yaml
MAGNITUDES = ("exponential", "uniform", "constant")
FEATURES_TYPE = "synthetic-features"
FEATURES_FILE, CONFIG_FILE = "features.npy", "config.json"
FORMAT_VERSION = 1  # bump when the generating procedure changes: it is part of every cache key
FEATURES_STREAM = 0  # random streams are [seed, stream, block]: 0 the features, 1 train rows, 2 val rows


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
    # A known hierarchy (0 groups: none): the first groups x children true features are made as the parts of
    # ``groups`` parent directions, child = unit(parent + spread * unit noise), so a small dictionary can merge a
    # group into one atom that a larger one splits (measures/families.py scores the splits against it).
    groups: int = 0
    children: int = 2  # parts per group
    spread: float = 0.75  # how far a part leaves its parent: cosine 1 / sqrt(1 + spread^2) on average

    def __post_init__(self) -> None:
        if self.corpus != CORPUS:
            raise ConfigError(f"data.corpus must be {CORPUS!r} for synthetic data, got {self.corpus!r}")
        for name in ("n_features", "d_in"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"data.seed must be a non-negative integer, got {self.seed!r}")
        if isinstance(self.active, bool) or not 0 < self.active < math.inf:  # also refuses NaN
            raise ConfigError(
                f"data.active (expected active features per activation) must be in (0, data.n_features="
                f"{self.n_features}], got {self.active!r}"
            )
        if self.magnitude not in MAGNITUDES:
            raise ConfigError(f"data.magnitude must be one of {MAGNITUDES}, got {self.magnitude!r}")
        if isinstance(self.noise, bool) or not (0 <= self.noise and math.isfinite(self.noise)):
            raise ConfigError(f"data.noise (a standard deviation) must be a finite number >= 0, got {self.noise!r}")
        self._check_hierarchy()
        rules.enforce(rules.View({"data": self}), at="section")  # data.active, data.groups against n_features

    def _check_hierarchy(self) -> None:
        for name, least in (("groups", 0), ("children", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"data.{name} must be an integer >= {least}, got {value!r}")
        if isinstance(self.spread, bool) or not (0 < self.spread and math.isfinite(self.spread)):
            raise ConfigError(f"data.spread must be a finite number > 0, got {self.spread!r}")

    def recorded(self) -> dict:
        """The config as names, digests and config.json record it: the hierarchy's fields only when there is one,
        so data without a hierarchy keeps the names and caches it had before the option existed."""
        out = asdict(self)
        if not self.groups:
            for name in ("groups", "children", "spread"):
                out.pop(name)
        return out

    @property
    def variant(self) -> str:
        """Its part of a dictionary's variant: "synthetic", or "synthetic-hier32x4" with a hierarchy."""
        return "synthetic" + (f"-hier{self.groups}x{self.children}" if self.groups else "")

    @property
    def p_active(self) -> float:
        return self.active / self.n_features

    @classmethod
    def from_dict(cls, values: dict) -> SyntheticConfig:
        """The config recorded in a dictionary's config.json (extra keys, such as ``features``, are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def true_features(cfg: SyntheticConfig) -> np.ndarray:
    """(n_features, d_in) float32: the true features, seeded Gaussian directions scaled to unit length."""
    rng = np.random.default_rng([cfg.seed, FEATURES_STREAM, 0])
    f = _unit(rng.standard_normal((cfg.n_features, cfg.d_in)))
    if cfg.groups:  # the parts: each group's parent direction plus its own noise (from a stream of their own)
        parts = cfg.groups * cfg.children
        more = np.random.default_rng([cfg.seed, FEATURES_STREAM, 1])
        parent = _unit(more.standard_normal((cfg.groups, cfg.d_in)))
        noise = _unit(more.standard_normal((parts, cfg.d_in)))
        f[:parts] = _unit(np.repeat(parent, cfg.children, axis=0) + cfg.spread * noise)
    return f.astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def true_groups(cfg: SyntheticConfig) -> np.ndarray:
    """(n_features,) each true feature's group under ``data.groups`` (its parent direction), -1 for none."""
    parts = cfg.groups * cfg.children
    return np.concatenate([np.arange(parts) // cfg.children, np.full(cfg.n_features - parts, -1)])


def features_name(cfg: SyntheticConfig) -> str:
    """``synthetic-features-<digest>``: one artifact per generating process (whatever the number of samples)."""
    return f"synthetic-features-{json_digest({'format': FORMAT_VERSION, **cfg.recorded()})[:10]}"


def save_true_features(store: ArtifactStore, cfg: SyntheticConfig) -> Artifact:
    """The ``synthetic-features`` artifact of ``cfg`` (features.npy + config.json), saved once and then reused."""

    def make():
        features = true_features(cfg)

        def write(folder: Path) -> None:
            np.save(folder / FEATURES_FILE, features)
            (folder / CONFIG_FILE).write_text(json.dumps(cfg.recorded(), indent=2) + "\n")

        return write, {"synthetic": cfg.recorded(), "shape": list(features.shape), "orientation": "rows are features"}

    return store.save_once(features_name(cfg), FEATURES_TYPE, same=lambda meta: True, make=make)[0]


def load_true_features(store: ArtifactStore | None, recorded: dict | None) -> np.ndarray | None:
    """The true features (n_features, d_in) behind a dictionary trained on synthetic data; None for any other.

    ``recorded``: the ``synthetic`` field of its config.json. Read from the ``synthetic-features`` artifact it names;
    if that store does not hold it (a dictionary pulled from W&B or a colleague's folder), regenerated from the
    recorded config, which is exact.
    """
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
