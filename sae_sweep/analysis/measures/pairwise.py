"""The note's numbers: MCS of every smaller -> larger pair, random and analytic baselines, EMD tables, counts,
correlations and the change in counts between sizes (everything behind Figures 3-12 and the note's three claims).

``compute`` fills a ``Results``; report/reproduction.py draws and writes it. Sample names in the EMD tables are made
here only: ``learned_name`` (one per seed), ``random_name`` (Rand 1..R) and ``ALT`` (the 2M "alt params" null).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from sae_sweep.analysis.measures.inference import score_difference
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.analysis.measures.nulls import analytic_null_mean, analytic_null_quantile, sampled_null
from sae_sweep.analysis.measures.stats import emd_matrix
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary
from sae_sweep.errors import ConfigError

log = logging.getLogger(__name__)
ALT = "alt params"  # the null against 2 x the reference (the note's Figure 7)


def learned_name(seed: int, seeds: list[int]) -> str:
    """The EMD-table name of the learned sample of ``seed``: "learned" with one seed, "learned s{seed}" with more."""
    return f"learned s{seed}" if len(seeds) > 1 else "learned"


def random_name(r: int) -> str:
    """The name of the r-th random sample (1-based, the note's Rand 1..4)."""
    return f"rand{r}"


def is_learned(name: str) -> bool:
    return name.startswith("learned")


def is_random(name: str) -> bool:
    return name.startswith("rand")


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
    training: list[dict] = field(default_factory=list)  # one row per dictionary: how its training ended
    converged: dict[tuple[int, int], bool] = field(default_factory=dict)  # (size, seed) -> met its stopping rule
    warnings: list[str] = field(default_factory=list)

    def vs_reference(self, size: int, seed: int) -> np.ndarray | None:
        """MCS of (size, seed) against the reference size of the same seed."""
        hit = self.mcs.get((size, seed, self.reference, seed))
        return None if hit is None else hit[0]

    def emd_between(self, size: int, a: str, b: str) -> float:
        """One entry of the size's EMD table, by sample names."""
        names, matrix = self.emd[size]
        return float(matrix[names.index(a), names.index(b)])


def _pairs(keys: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Every (smaller size -> larger size) pair, within a seed and across seeds."""
    return [(ja, sa, jb, sb) for ja, sa in keys for jb, sb in keys if ja < jb]


def compute(dicts: dict[tuple[int, int], Dictionary], cfg: AnalysisConfig, progress=None) -> Results:
    """All the numbers of the note for these dictionaries. ``progress(iterable, total, description)`` wraps loops."""
    track = progress or (lambda it, total, description: it)
    sizes = sorted({j for j, _ in dicts})
    seeds = sorted({s for _, s in dicts})
    d_in = next(iter(dicts.values())).d_in
    reference, featured = check_sizes(cfg, sizes)
    smaller = [j for j in sizes if j < reference]
    res = Results(cfg, d_in, sizes, seeds, reference, featured)
    res.training = training_rows(dicts)
    res.converged = {(r["dict_size"], r["seed"]): r["converged"] for r in res.training}
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
        res.emd[j] = _low_emd_matrix(emd_samples(res, j), cfg.cutoff)
    return res


def check_sizes(cfg: AnalysisConfig, sizes: list[int]) -> tuple[int, int | None]:
    """(reference, featured) for dictionaries of these sizes; ConfigError naming the key when one is not there."""
    reference = cfg.reference or sizes[-1]
    if reference not in sizes:
        raise ConfigError(
            f"analysis.reference={reference} is not among the dictionary sizes {sizes}: pick one of them, or drop the "
            "override to use the largest"
        )
    smaller = [j for j in sizes if j < reference]
    if cfg.featured is not None and cfg.featured not in smaller:
        raise ConfigError(
            f"analysis.featured={cfg.featured} is not among the sizes below the reference J={reference} ({smaller}): "
            "pick one of them, or drop the override to use the one closest to 1024"
        )
    featured = cfg.featured or (min(smaller, key=lambda j: abs(np.log2(j / 1024))) if smaller else None)
    return reference, featured


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


def training_rows(dicts: dict[tuple[int, int], Dictionary]) -> list[dict]:
    """How each dictionary's training ended (its config.json's ``training``), by size and seed."""
    rows = []
    for (j, s), d in sorted(dicts.items()):
        t = d.config.training
        if d.config.imported:  # trained elsewhere: no record of how training ended
            continue
        rows.append(
            {
                "dict_size": j,
                "seed": s,
                "converged": bool(t["converged"]),
                "until": t.get("until"),
                "activations_seen": t["activations_seen"],
                "converged_at_step": t.get("converged_at_step"),
                "last_improvement": t.get("last_improvement"),
                "last_drift": t.get("last_drift"),
                "val_fvu": d.config.metrics["val/fvu"],
                "val_l0": d.config.metrics["val/l0"],
            }
        )
    return rows


def emd_samples(res: Results, j: int) -> dict[str, np.ndarray]:
    """The MCS samples the size-``j`` EMD table compares, by name: learned (per seed), Rand 1..R, alt params."""
    samples = {}
    for s in res.seeds:
        learned = res.vs_reference(j, s)
        if learned is not None:
            samples[learned_name(s, res.seeds)] = learned
    samples.update({random_name(r + 1): v for r, v in enumerate(res.random[j])})
    samples[ALT] = res.alt[j]
    return samples


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
                "converged": res.converged.get((j, seed)),
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


def size_steps(rows: list[dict], level: float) -> list[dict]:
    """For consecutive sizes of ``counts`` rows: the change in the high-MCS count and proportion, with intervals."""
    steps = []
    for a, b in zip(rows, rows[1:], strict=False):
        count = score_difference(b["high"], b["n"], a["high"], a["n"], level, counts=True)
        prop = score_difference(b["high"], b["n"], a["high"], a["n"], level)
        steps.append({"from": a["dict_size"], "to": b["dict_size"], "count": count, "proportion": prop})
    return steps
