"""Stage ``analyze``: a finished sweep's dictionaries -> MCS distributions, random and analytic baselines, EMD tables,
correlations and high/low-MCS counts (the numbers behind every figure of the note). No Lightning here.

``run`` computes everything into a ``Results`` and hands it to report.py, which writes the files. The pieces are
usable from a notebook: ``collect_local`` / ``collect_wandb`` load dictionaries, ``similarity.max_cosine_similarity``
compares any two of them.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sae_sweep import ConfigError, DataError
from sae_sweep.artifacts import DICTIONARY_TYPE, MANIFEST, Dictionary, load_dictionary
from sae_sweep.similarity import (
    analytic_null_mean,
    analytic_null_quantile,
    emd_matrix,
    max_cosine_similarity,
    sampled_null,
)

log = logging.getLogger(__name__)
SOURCES = ("local", "wandb")


@dataclass(frozen=True)
class SourceConfig:
    kind: str = "local"  # local: the artifact store (or any folder of dictionary folders); wandb: a W&B project
    path: str | None = None  # local: a store or sweep output folder; None: paths.root's store
    entity: str | None = None  # wandb: team or user; None: your default entity
    project: str = "sae-sweep"
    artifact_type: str = DICTIONARY_TYPE

    def __post_init__(self) -> None:
        if self.kind not in SOURCES:
            raise ConfigError(f"source.kind must be one of {SOURCES}, got {self.kind!r}")


@dataclass(frozen=True)
class AnalysisConfig:
    layer: int = 2  # which layer's dictionaries to compare
    reference: int | None = None  # dict size every smaller one is scored against; None: the largest (the note: 8192)
    featured: int | None = None  # dict size of the single-size figures (the note: 1024); None: closest to 1024
    cutoff: float = 0.5  # EMDs compare the MCS < cutoff part of each distribution (the low mode)
    threshold: float = 0.5  # MCS >= threshold counts as high-MCS
    n_random: int = 4  # random dictionary pairs per size (Rand 1..R of the note)
    seed: int = 0  # random baselines
    chunk_size: int = 4096  # rows of A per MCS block: memory is chunk_size x |B| floats
    device: str | None = None  # MCS device; None: CUDA when available
    bins: int = 50
    # Beyond the note (issue 6)
    variant: str | None = None  # the main run: "" = the note's setup; None: "" when present, else the only variant
    controls: bool = True  # also analyse every other variant found (untrained GPT, resampling, l1, synthetic)
    n_boot: int = 1000  # bootstrap replicates (features resampled) for every EMD and proportion
    level: float = 0.95  # confidence level of the bootstrap intervals
    null_quantile: float = 0.999  # the principled split: MCS above this quantile of the exact null is high
    stay_cosine: float = 0.99  # a feature whose decoder has cosine >= this with its initial direction never left
    shared_cosine: float = 0.7  # cross-seed Hungarian matches at or above this count as shared (Paulo & Belrose)
    recovered_cosine: float = 0.9  # synthetic data: a true feature is recovered at MCS above this
    hungarian_max: int = 8192  # Hungarian matching only for dictionaries up to this size (it builds J x M matrices)

    def __post_init__(self) -> None:
        for name in ("n_random", "chunk_size", "bins", "n_boot", "hungarian_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"analysis.{name} must be a positive integer, got {value!r}")
        for name in ("cutoff", "threshold", "stay_cosine", "shared_cosine", "recovered_cosine"):
            if not -1.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"analysis.{name} must be in (-1, 1], got {getattr(self, name)!r}")
        for name in ("level", "null_quantile"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"analysis.{name} must be in (0, 1), got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------------------- collecting

_NAME = re.compile(r"^sae-L(?P<layer>\d+)-J(?P<size>\d+)-s(?P<seed>\d+)(?:-(?P<variant>[A-Za-z0-9._-]+))?$")
Collection = dict[str, dict[tuple[int, int], Dictionary]]  # variant ("" = the note's setup) -> (size, seed) -> dict


def _latest_by_name(found: Iterable[tuple[str, int, Path]]) -> dict[str, Path]:
    """Keep the newest version of each name, warning about the older ones."""
    by_name: dict[str, list[tuple[int, Path]]] = {}
    for name, version, path in found:
        by_name.setdefault(name, []).append((version, path))
    chosen = {}
    for name, versions in sorted(by_name.items()):
        versions.sort()
        if len(versions) > 1:
            old = ", ".join(f"v{v}" for v, _ in versions[:-1])
            warnings.warn(
                f"{name} has {len(versions)} versions; using the latest, v{versions[-1][0]} (ignoring {old})",
                stacklevel=2,
            )
        chosen[name] = versions[-1][1]
    return chosen


def collect_local_variants(path: str | Path, layer: int) -> Collection:
    """Every dictionary of ``layer`` under ``path`` (a store, or any folder of dictionary folders), by variant."""
    root = Path(path)
    found = []
    for manifest_path in sorted(root.rglob(MANIFEST)) if root.is_dir() else []:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("type") == DICTIONARY_TYPE:
            found.append((manifest["name"], manifest["version"], manifest_path.parent))
    return _group(_latest_by_name(found), layer, where=str(root))


def collect_local(path: str | Path, layer: int, variant: str | None = None) -> dict[tuple[int, int], Dictionary]:
    """One variant's dictionaries under ``path`` by (size, seed); ``variant`` as AnalysisConfig.variant."""
    found = collect_local_variants(path, layer)
    return found[main_variant(found, variant, where=str(path))]


def collect_wandb(source: SourceConfig, layer: int, cache_dir: Path, api=None) -> Collection:
    """Download (once, into ``cache_dir``) the latest version of every dictionary artifact of a W&B project."""
    if api is None:
        import wandb  # noqa: PLC0415

        api = wandb.Api()
    project = f"{source.entity}/{source.project}" if source.entity else source.project
    found = []
    for collection in api.artifact_collections(project_name=project, type_name=source.artifact_type):
        for art in api.artifacts(source.artifact_type, f"{project}/{collection.name}"):
            meta = art.metadata or {}
            if meta.get("layer", layer) != layer:
                continue
            name, _, version = art.name.partition(":")
            target = cache_dir / name / version
            if not (target / MANIFEST).exists():
                art.download(root=str(target))
            found.append((name, int(version.lstrip("v")), target))
    return _group(_latest_by_name(found), layer, where=f"W&B project {project} (type {source.artifact_type})")


def main_variant(found: Collection, variant: str | None, where: str) -> str:
    """Which variant is the main run: the one asked for, else the note's setup (""), else the only one."""
    names = ", ".join(repr(v) for v in sorted(found))
    if variant is not None:
        if variant not in found:
            raise ConfigError(f"analysis.variant={variant!r}: no such dictionaries in {where}; found variants {names}")
        return variant
    if "" in found:
        return ""
    if len(found) == 1:
        return next(iter(found))
    raise ConfigError(f"{where} holds several variants ({names}) and none is the plain one: pick analysis.variant=")


def _group(chosen: dict[str, Path], layer: int, where: str) -> Collection:
    found: Collection = {}
    for name, path in chosen.items():
        m = _NAME.match(name)
        if m is None or int(m["layer"]) != layer:
            continue
        d = load_dictionary(path)  # checks every file's sha256 and names a corrupt one
        found.setdefault(m["variant"] or "", {})[(d.dict_size, int(m["seed"]))] = d
    if not found:
        raise DataError(
            f"no layer-{layer} dictionaries found in {where}. Train some first "
            "(`python train.py -m experiment=demo`), or point source.path / source.project at them."
        )
    for dicts in found.values():
        widths = {d.d_in: d.name for d in dicts.values()}
        if len(widths) > 1:
            desc = " and ".join(f"{name} (d_in={w})" for w, name in widths.items())
            raise DataError(f"the dictionaries have different widths: {desc}; compare one activation space at a time")
    return found


# ------------------------------------------------------------------------------------------ computing


@dataclass
class Results:
    config: AnalysisConfig
    d_in: int
    sizes: list[int]  # dictionary sizes present, ascending
    seeds: list[int]
    reference: int
    featured: int | None
    # MCS of every smaller -> larger pair: (size_a, seed_a, size_b, seed_b) -> (values, indices)
    mcs: dict[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    random: dict[int, list[np.ndarray]] = field(default_factory=dict)  # size -> R null MCS samples vs reference
    alt: dict[int, np.ndarray] = field(default_factory=dict)  # size -> null MCS vs 2 x reference
    null_mean: dict[int, float] = field(default_factory=dict)  # M -> analytic E[max]
    null_q999: dict[int, float] = field(default_factory=dict)  # M -> analytic 99.9% quantile
    emd: dict[int, tuple[list[str], np.ndarray]] = field(default_factory=dict)  # size -> (names, matrix)
    warnings: list[str] = field(default_factory=list)

    def vs_reference(self, size: int, seed: int) -> np.ndarray | None:
        """MCS of (size, seed) against the reference size of the same seed."""
        hit = self.mcs.get((size, seed, self.reference, seed))
        return None if hit is None else hit[0]


def _pairs(keys: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Every (smaller size -> larger size) pair, within a seed and across seeds."""
    return [(ja, sa, jb, sb) for ja, sa in keys for jb, sb in keys if ja < jb]


def compute(dicts: dict[tuple[int, int], Dictionary], cfg: AnalysisConfig, progress=None) -> Results:
    """All the numbers of the note for these dictionaries. ``progress(iterable, total, description)`` wraps loops."""
    track = progress or (lambda it, total, description: it)
    sizes = sorted({j for j, _ in dicts})
    seeds = sorted({s for _, s in dicts})
    d_in = next(iter(dicts.values())).d_in
    reference = cfg.reference or sizes[-1]
    if reference not in sizes:
        raise ConfigError(f"analysis.reference={reference} is not among the dictionary sizes {sizes}")
    smaller = [j for j in sizes if j < reference]
    featured = cfg.featured or (min(smaller, key=lambda j: abs(np.log2(j / 1024))) if smaller else None)
    res = Results(cfg, d_in, sizes, seeds, reference, featured)
    if not smaller:
        msg = f"only one dictionary size ({sizes[0]}): the pairwise MCS, EMD and count parts are skipped"
        warnings.warn(msg, stacklevel=2)
        res.warnings.append(msg)
        return res

    rows = {key: d.decoder.T.contiguous() for key, d in dicts.items()}  # features as rows: (dict_size, d_in)
    pairs = _pairs(sorted(dicts))
    for ja, sa, jb, sb in track(pairs, len(pairs), "MCS pairs"):
        res.mcs[(ja, sa, jb, sb)] = max_cosine_similarity(
            rows[(ja, sa)], rows[(jb, sb)], chunk_size=cfg.chunk_size, device=cfg.device
        )

    for M in (reference, 2 * reference):
        res.null_mean[M] = analytic_null_mean(d_in, M)
        res.null_q999[M] = analytic_null_quantile(0.999, d_in, M)
    for i, j in enumerate(track(smaller, len(smaller), "random baselines")):
        base = cfg.seed * 1_000_003 + 1009 * i
        res.random[j] = [sampled_null(j, reference, d_in, seed=base + r) for r in range(cfg.n_random)]
        res.alt[j] = sampled_null(j, 2 * reference, d_in, seed=base + 997)
        samples = {}
        for s in seeds:
            learned = res.vs_reference(j, s)
            if learned is not None:
                samples[f"learned s{s}" if len(seeds) > 1 else "learned"] = learned
        samples.update({f"rand{r + 1}": v for r, v in enumerate(res.random[j])})
        samples["alt params"] = res.alt[j]
        res.emd[j] = _low_emd_matrix(samples, cfg.cutoff)
    return res


def _low_emd_matrix(samples: dict[str, np.ndarray], cutoff: float) -> tuple[list[str], np.ndarray]:
    """EMD matrix of the parts below ``cutoff``; a sample with no value below it gets NaN distances."""
    low = {k: v[v < cutoff] for k, v in samples.items()}
    names = list(low)
    kept, sub = emd_matrix({k: v for k, v in low.items() if v.size})
    matrix = np.full((len(names), len(names)), np.nan)
    idx = [names.index(k) for k in kept]
    matrix[np.ix_(idx, idx)] = sub
    np.fill_diagonal(matrix, 0.0)
    return names, matrix


def counts(res: Results, seed: int) -> list[dict]:
    """High/low-MCS counts and proportions per size, against the reference (Figures 11 and 12)."""
    out = []
    for j in res.sizes:
        v = res.vs_reference(j, seed)
        if v is None:
            continue
        high = int((v >= res.config.threshold).sum())
        out.append(
            {
                "dict_size": j,
                "seed": seed,
                "n": v.size,
                "high": high,
                "low": v.size - high,
                "high_fraction": high / v.size,
                "low_fraction": 1 - high / v.size,
                "mean_mcs": float(v.mean()),
            }
        )
    return out


def correlations(res: Results, seed: int) -> list[dict]:
    """For each size with two larger ones: each feature's MCS against both, and their Pearson and Spearman r."""
    from scipy import stats  # noqa: PLC0415

    out = []
    for j in res.sizes:
        larger = [k for k in res.sizes if k > j][:2]
        if len(larger) < 2 or (j, seed, larger[0], seed) not in res.mcs:
            continue
        x, y = res.mcs[(j, seed, larger[0], seed)][0], res.mcs[(j, seed, larger[1], seed)][0]
        out.append(
            {
                "dict_size": j,
                "seed": seed,
                "x_size": larger[0],
                "y_size": larger[1],
                "x": x,
                "y": y,
                "pearson": float(stats.pearsonr(x, y)[0]),
                "spearman": float(stats.spearmanr(x, y)[0]),
            }
        )
    return out


def pair_table(res: Results) -> list[dict]:
    """One row per compared pair: the MCS distribution's summary, within and across seeds."""
    rows = []
    for (ja, sa, jb, sb), (v, _) in sorted(res.mcs.items()):
        rows.append(
            {
                "size_a": ja,
                "seed_a": sa,
                "size_b": jb,
                "seed_b": sb,
                "same_seed": sa == sb,
                "mean_mcs": float(v.mean()),
                "median_mcs": float(np.median(v)),
                "high_fraction": float((v >= res.config.threshold).mean()),
            }
        )
    return rows
