"""Beyond the note: the numbers that say what the low-MCS features are.

The note leaves open whether low-MCS features are dead, fits to noise, or real features a larger dictionary missed,
and rests on one threshold, one matching rule, isotropic nulls and no error bars. ``compute_extras`` adds, for the main
run of an analysis (one ``Results``):

- liveness: each feature's held-out firing frequency and encoder-decoder cosine beside its MCS; the MCS again with
  the reference restricted to its live features;
- movement: each feature's decoder cosine with its own direction at initialisation;
- matching: Hungarian one-to-one matching beside plain max (MMCS), and the features shared across seeds;
- a principled split: the exact null's quantile for the pair's (K, M) beside the fixed threshold, and a two-component
  fit (exact null + a learned Beta) that estimates the number of real features;
- error bars: bootstrap intervals for every EMD and proportion, and the seed-to-seed spread;
- anisotropic nulls: random dictionaries from N(0, S) (S = the activations' covariance) and made of activation rows;
- ground truth (synthetic data): each dictionary against the true features.

``control_rows`` puts other variants of the sweep (untrained GPT, resampling, smaller l1, synthetic data) side by side.
Everything here is arrays in, rows (lists of dicts) and arrays out; report.py draws and writes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sae_sweep import DataError
from sae_sweep.analysis import AnalysisConfig, Results
from sae_sweep.artifacts import Dictionary
from sae_sweep.similarity import (
    activation_covariance,
    activation_dictionary,
    analytic_null_quantile,
    emd,
    gaussian_dictionary,
    hungarian_match,
    max_cosine_similarity,
    rowwise_cosine,
)
from sae_sweep.stats import MixtureFit, emd_ci, fit_null_mixture, proportion_ci, shared_fraction

log = logging.getLogger(__name__)
Key = tuple[int, int]  # (dict_size, seed)


@dataclass
class FeatureTable:
    """Per-feature arrays of one dictionary (dict_size,), scored against the reference of its seed."""

    mcs: np.ndarray
    mcs_live_ref: np.ndarray  # MCS against the reference's live features only
    firing: np.ndarray  # held-out firing frequency (0: dead)
    enc_dec_cos: np.ndarray  # cosine of encoder row j with decoder column j
    init_cos: np.ndarray  # cosine of decoder column j with itself at initialisation


@dataclass
class Extras:
    variant: str
    null_q: dict[int, float]  # M -> the analytic null's analysis.null_quantile for (K, M)
    features: dict[Key, FeatureTable] = field(default_factory=dict)
    fits: dict[Key, MixtureFit] = field(default_factory=dict)
    liveness: list[dict] = field(default_factory=list)
    movement: list[dict] = field(default_factory=list)
    matching: list[dict] = field(default_factory=list)
    shared: list[dict] = field(default_factory=list)
    split: list[dict] = field(default_factory=list)
    emd_ci: list[dict] = field(default_factory=list)
    spread: list[dict] = field(default_factory=list)
    anisotropic: list[dict] = field(default_factory=list)
    anisotropic_samples: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # size -> null -> MCS
    ground_truth: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _n_val(d: Dictionary) -> int:
    """How many held-out activations the firing counts were taken over."""
    n = (d.config.get("harvest") or {}).get("n_val_tokens")
    return int(n) if n else max(int(d.firing_counts.max()), 1)


def _rows(d: Dictionary) -> np.ndarray:
    return d.decoder.T.numpy()  # (dict_size, d_in): features as rows


def feature_table(d: Dictionary, ref: Dictionary, mcs: np.ndarray, cfg: AnalysisConfig) -> FeatureTable:
    enc = d.tensors.get("encoder.weight")
    dec = _rows(d)
    enc_cos = np.ones(d.dict_size) if enc is None else rowwise_cosine(enc.numpy(), dec)  # tied: encoder = D^T
    live = ref.firing_counts > 0
    if live.any():
        live_rows = _rows(ref)[live]
        mcs_live = max_cosine_similarity(dec, live_rows, chunk_size=cfg.chunk_size, device=cfg.device)[0]
    else:
        mcs_live = np.full(d.dict_size, np.nan)
    return FeatureTable(
        mcs=mcs,
        mcs_live_ref=mcs_live,
        firing=d.firing_counts / _n_val(d),
        enc_dec_cos=enc_cos,
        init_cos=rowwise_cosine(dec, d.tensors["decoder_init"].T.numpy()),
    )


def _fit(v: np.ndarray, K: int, M: int) -> MixtureFit | None:
    """The two-component fit, or None where there are too few features to fit (a tiny dictionary)."""
    try:
        return fit_null_mixture(v, K, M)
    except DataError as exc:
        log.warning("no two-component fit for %d features: %s", v.size, exc)
        return None


def _frac(mask: np.ndarray, within: np.ndarray | None = None) -> float:
    base = mask if within is None else mask[within]
    return float(base.mean()) if base.size else float("nan")


def _liveness_row(j: int, s: int, t: FeatureTable, cfg: AnalysisConfig, q: float) -> dict:
    low = t.mcs < cfg.threshold
    dead = t.firing == 0
    return {
        "dict_size": j,
        "seed": s,
        "n_low": int(low.sum()),
        "low_dead_fraction": _frac(dead, low),  # low-MCS features that never fire
        "low_live_null_fraction": _frac(~dead & (t.mcs < q), low),  # fire, but as close as random vectors
        "high_dead_fraction": _frac(dead, ~low),
        "median_log10_freq_low": float(np.median(np.log10(t.firing[low & ~dead]))) if (low & ~dead).any() else None,
        "median_log10_freq_high": float(np.median(np.log10(t.firing[~low & ~dead]))) if (~low & ~dead).any() else None,
        "enc_dec_cos_low": float(np.median(t.enc_dec_cos[low])) if low.any() else None,
        "enc_dec_cos_high": float(np.median(t.enc_dec_cos[~low])) if (~low).any() else None,
        "high_fraction": _frac(~low),
        "high_fraction_live_ref": _frac(t.mcs_live_ref >= cfg.threshold),
    }


def _movement_row(j: int, s: int, t: FeatureTable, cfg: AnalysisConfig) -> dict:
    low = t.mcs < cfg.threshold
    stayed = t.init_cos >= cfg.stay_cosine
    return {
        "dict_size": j,
        "seed": s,
        "n_low": int(low.sum()),
        "low_stayed": int((stayed & low).sum()),
        "low_stayed_fraction": _frac(stayed, low),
        "high_stayed_fraction": _frac(stayed, ~low),
        "median_init_cos_low": float(np.median(t.init_cos[low])) if low.any() else None,
        "median_init_cos_high": float(np.median(t.init_cos[~low])) if (~low).any() else None,
    }


def _split_row(j: int, s: int, v: np.ndarray, fit: MixtureFit | None, cfg: AnalysisConfig, q: float) -> dict:
    hi, hi_lo, hi_hi = proportion_ci(v >= cfg.threshold, cfg.n_boot, cfg.level, seed=cfg.seed)
    nq, nq_lo, nq_hi = proportion_ci(v >= q, cfg.n_boot, cfg.level, seed=cfg.seed + 1)
    return {
        "dict_size": j,
        "seed": s,
        "n": v.size,
        "threshold": cfg.threshold,
        "high_fraction": hi,
        "high_lo": hi_lo,
        "high_hi": hi_hi,
        "null_quantile": q,
        "high_null_fraction": nq,
        "high_null_lo": nq_lo,
        "high_null_hi": nq_hi,
        "mixture_n_real": fit.n_real if fit else None,
        "mixture_null_weight": fit.null_weight if fit else None,
    }


def _matching_row(j: int, s: int, ref: int, a: np.ndarray, b: np.ndarray, v: np.ndarray, cfg: AnalysisConfig) -> dict:
    row = {
        "dict_size": j,
        "seed": s,
        "reference": ref,
        "mmcs": float(v.mean()),
        "high_fraction_max": _frac(v >= cfg.threshold),
    }
    if max(j, ref) <= cfg.hungarian_max:
        _, _, cos = hungarian_match(a, b)
        row.update(hungarian_mean=float(cos.mean()), high_fraction_hungarian=_frac(cos >= cfg.threshold))
    else:
        row.update(hungarian_mean=None, high_fraction_hungarian=None)
    return row


def _emd_ci_rows(res: Results, j: int, cfg: AnalysisConfig) -> list[dict]:
    """Every EMD of the size-j matrix with its bootstrap interval (both samples resampled)."""
    samples = {}
    for s in res.seeds:
        v = res.vs_reference(j, s)
        if v is not None:
            samples[f"learned s{s}" if len(res.seeds) > 1 else "learned"] = v
    samples.update({f"rand{r + 1}": v for r, v in enumerate(res.random[j])})
    samples["alt params"] = res.alt[j]
    low = {k: v[v < cfg.cutoff] for k, v in samples.items()}
    names = list(low)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if low[a].size == 0 or low[b].size == 0:
                continue
            value, lo, hi = emd_ci(low[a], low[b], cfg.n_boot, cfg.level, seed=cfg.seed + len(rows))
            rows.append({"dict_size": j, "a": a, "b": b, "emd": value, "lo": lo, "hi": hi})
    return rows


SPREAD_METRICS = {
    "split": ("high_fraction", "high_null_fraction", "mixture_n_real"),
    "liveness": ("low_dead_fraction", "low_live_null_fraction", "high_fraction_live_ref"),
    "movement": ("low_stayed_fraction",),
    "matching": ("mmcs", "hungarian_mean"),
}


def seed_spread(extras: Extras) -> list[dict]:
    """Mean and standard deviation across seeds of every per-seed metric, per size."""
    rows = []
    for table, metrics in SPREAD_METRICS.items():
        by_size: dict[int, list[dict]] = {}
        for r in getattr(extras, table):
            by_size.setdefault(r["dict_size"], []).append(r)
        for j, group in sorted(by_size.items()):
            for m in metrics:
                vals = np.array([r[m] for r in group if r.get(m) is not None], dtype=float)
                vals = vals[np.isfinite(vals)]
                if vals.size < 2:
                    continue
                rows.append(
                    {
                        "table": table,
                        "metric": m,
                        "dict_size": j,
                        "seeds": vals.size,
                        "mean": float(vals.mean()),
                        "sd": float(vals.std(ddof=1)),
                        "min": float(vals.min()),
                        "max": float(vals.max()),
                    }
                )
    return rows


def _shared_rows(dicts: dict[Key, Dictionary], seeds: list[int], cfg: AnalysisConfig) -> list[dict]:
    rows = []
    for j in sorted({k[0] for k in dicts}):
        have = [s for s in seeds if (j, s) in dicts]
        for i, sa in enumerate(have):
            for sb in have[i + 1 :]:
                a, b = _rows(dicts[(j, sa)]), _rows(dicts[(j, sb)])
                v = max_cosine_similarity(a, b, chunk_size=cfg.chunk_size, device=cfg.device)[0]
                row = {"dict_size": j, "seed_a": sa, "seed_b": sb, "mmcs": float(v.mean())}
                if j <= cfg.hungarian_max:
                    frac, cos = shared_fraction(a, b, cfg.shared_cosine)
                    row.update(shared_fraction=frac, hungarian_mean=float(cos.mean()))
                else:
                    row.update(shared_fraction=None, hungarian_mean=None)
                rows.append(row)
    return rows


def compute_extras(
    res: Results,
    dicts: dict[Key, Dictionary],
    cfg: AnalysisConfig,
    variant: str = "",
    cache_dir: Path | None = None,
    true_features: np.ndarray | None = None,
    progress=None,
) -> Extras:
    """Everything beyond the note for one run. ``cache_dir``: where the activation caches are (anisotropic nulls)."""
    track = progress or (lambda it, total, description: it)
    ref = res.reference
    ex = Extras(variant, {M: analytic_null_quantile(cfg.null_quantile, res.d_in, M) for M in sorted({ref, *res.sizes})})
    q = ex.null_q[ref]
    keys = [(j, s) for s in res.seeds for j in res.sizes if j < ref and res.vs_reference(j, s) is not None]
    for j, s in track(keys, len(keys), "features beyond max"):
        v = res.vs_reference(j, s)
        t = feature_table(dicts[(j, s)], dicts[(ref, s)], v, cfg)
        ex.features[(j, s)] = t
        fit = _fit(v, res.d_in, ref)
        if fit is not None:
            ex.fits[(j, s)] = fit
        ex.liveness.append(_liveness_row(j, s, t, cfg, q))
        ex.movement.append(_movement_row(j, s, t, cfg))
        ex.split.append(_split_row(j, s, v, fit, cfg, q))
        ex.matching.append(_matching_row(j, s, ref, _rows(dicts[(j, s)]), _rows(dicts[(ref, s)]), v, cfg))
    for j in track(sorted(res.emd), len(res.emd), "bootstrap EMDs"):
        ex.emd_ci += _emd_ci_rows(res, j, cfg)
    ex.shared = _shared_rows(dicts, res.seeds, cfg)
    ex.spread = seed_spread(ex)
    if cache_dir is not None and keys:
        anisotropic(ex, res, dicts, cfg, cache_dir)
    if true_features is not None:
        ex.ground_truth = ground_truth_rows(res, dicts, true_features, cfg, ex.fits)
    return ex


# ----------------------------------------------------------------------------------------- anisotropic nulls


def _activations_of(dicts: dict[Key, Dictionary], cache_dir: Path):
    from sae_sweep.harvest import open_activations  # noqa: PLC0415

    keys = {(d.config.get("activations") or {}).get("key") for d in dicts.values()} - {None}
    for key in sorted(keys):
        path = Path(cache_dir) / "activations" / key
        if (path / "meta.json").exists():
            return open_activations(path)
    return None


def anisotropic(ex: Extras, res: Results, dicts: dict[Key, Dictionary], cfg: AnalysisConfig, cache_dir: Path) -> None:
    """Random dictionaries from N(0, S) and from activation rows, beside the isotropic null, for every size."""
    acts = _activations_of(dicts, cache_dir)
    if acts is None:
        ex.notes.append(
            "anisotropic nulls skipped: the activation cache these dictionaries were trained on is not under "
            f"{cache_dir} (it is local to the machine that trained them)"
        )
        return
    _, cov = activation_covariance(acts.train)
    ref, seed = res.reference, res.seeds[0]
    s_ref, s_small, s_acts = (int(x.generate_state(1)[0]) for x in np.random.SeedSequence([cfg.seed, 6]).spawn(3))
    gauss_ref = gaussian_dictionary(ref, cov, s_ref)
    for j in sorted(res.emd):
        learned = res.vs_reference(j, seed)
        if learned is None:
            continue
        rows = activation_dictionary(acts.train, j + ref, s_acts + j)  # disjoint draws for the two sides
        nulls = {
            "isotropic": res.random[j][0],
            "gaussian_cov": max_cosine_similarity(
                gaussian_dictionary(j, cov, s_small + j), gauss_ref, chunk_size=cfg.chunk_size, device=cfg.device
            )[0],
            "activation_rows": max_cosine_similarity(rows[:j], rows[j:], chunk_size=cfg.chunk_size, device=cfg.device)[
                0
            ],
        }
        ex.anisotropic_samples[j] = {"learned": learned, **nulls}
        row = {"dict_size": j, "seed": seed}
        low = learned[learned < cfg.cutoff]
        for name, v in nulls.items():
            v_low = v[v < cfg.cutoff]
            row[f"{name}_high_fraction"] = _frac(v >= cfg.threshold)
            row[f"emd_full_{name}"] = emd(learned, v)
            row[f"emd_low_{name}"] = emd(low, v_low) if low.size and v_low.size else None
        ex.anisotropic.append(row)


# -------------------------------------------------------------------------------------------- ground truth


def ground_truth_rows(
    res: Results, dicts: dict[Key, Dictionary], true: np.ndarray, cfg: AnalysisConfig, fits: dict[Key, MixtureFit]
) -> list[dict]:
    """Each dictionary against the true features of synthetic data: recovery, and where the low-MCS mode appears."""
    rows = []
    for (j, s), d in sorted(dicts.items()):
        dec = _rows(d)
        true_mcs = max_cosine_similarity(true, dec, chunk_size=cfg.chunk_size, device=cfg.device)[0]  # (n_true,)
        dict_mcs = max_cosine_similarity(dec, true, chunk_size=cfg.chunk_size, device=cfg.device)[0]  # (J,)
        v = res.vs_reference(j, s)
        fit = fits.get((j, s))
        rows.append(
            {
                "dict_size": j,
                "seed": s,
                "n_true": true.shape[0],
                "cosine": cfg.recovered_cosine,
                "threshold": cfg.threshold,
                "recovered_fraction": _frac(true_mcs > cfg.recovered_cosine),
                "matched_fraction": _frac(dict_mcs > cfg.recovered_cosine),  # dictionary features that are true ones
                "low_vs_truth_fraction": _frac(dict_mcs < cfg.threshold),  # the low-MCS mode, scored against the truth
                "low_fraction": None if v is None else _frac(v < cfg.threshold),
                "mixture_n_real": None if fit is None else fit.n_real,
            }
        )
    return rows


def first_seed_rows(rows: list[dict]) -> list[dict]:
    """The rows of the smallest seed, by dictionary size (what a single-seed figure or sentence shows)."""
    if not rows:
        return []
    seed = min(r["seed"] for r in rows)
    return sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["dict_size"])


# ------------------------------------------------------------------------------------------------ controls


def control_rows(variant: str, res: Results, dicts: dict[Key, Dictionary], fits: dict[Key, MixtureFit] | None = None):
    """One row per (size, seed) of a variant: the numbers to set side by side with the main run's."""
    cfg = res.config
    q = analytic_null_quantile(cfg.null_quantile, res.d_in, res.reference)
    rows = []
    for s in res.seeds:
        for j in res.sizes:
            v = res.vs_reference(j, s)
            if v is None:
                continue
            names, m = res.emd[j]
            learned = names.index(f"learned s{s}" if len(res.seeds) > 1 else "learned")
            fit = (fits or {}).get((j, s)) or _fit(v, res.d_in, res.reference)
            d = dicts[(j, s)]
            metrics = d.config.get("metrics") or {}
            rows.append(
                {
                    "variant": variant or "(note)",
                    "dict_size": j,
                    "seed": s,
                    "reference": res.reference,
                    "high_fraction": _frac(v >= cfg.threshold),
                    "high_null_fraction": _frac(v >= q),
                    "mixture_n_real": fit.n_real if fit else None,
                    "low_dead_fraction": _frac(d.firing_counts == 0, v < cfg.threshold),
                    "dead_fraction": metrics.get("val/dead_fraction"),
                    "fvu": metrics.get("val/fvu"),
                    "l0": metrics.get("val/l0"),
                    "n_resampled": d.config.get("n_resampled", 0),
                    "emd_learned_rand1": float(m[learned, names.index("rand1")]),
                }
            )
    return rows
