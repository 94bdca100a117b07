"""Per-feature facts beyond MCS, and the per-dictionary rows they give.

For each dictionary scored against the reference of its seed: held-out firing frequency and encoder-decoder cosine
(liveness), the decoder's cosine with its own initialisation (movement), MCS against the reference's live features,
Hungarian matching beside max, the high-MCS fraction at the exact null's quantile with bootstrap intervals and a
two-component fit (split), and bootstrap intervals for every EMD. Arrays in, rows (lists of dicts) out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from sae_sweep.analysis.measures.inference import proportion_interval
from sae_sweep.analysis.measures.mcs import hungarian_match, max_cosine_similarity, rowwise_cosine
from sae_sweep.analysis.measures.mixture import MixtureFit, fit_null_mixture
from sae_sweep.analysis.measures.pairwise import Results, emd_samples
from sae_sweep.analysis.measures.stats import emd_ci
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary
from sae_sweep.errors import DataError

log = logging.getLogger(__name__)
Key = tuple[int, int]  # (dict_size, seed)


@dataclass
class FeatureTable:
    """Per-feature arrays of one dictionary (dict_size,), scored against the reference of its seed."""

    mcs: np.ndarray
    mcs_live_ref: np.ndarray  # MCS against the reference's live features only
    firing: np.ndarray | None  # held-out firing frequency (0: dead); None when not recorded (an imported SAE)
    enc_dec_cos: np.ndarray  # cosine of encoder row j with decoder column j (NaN when the encoder is unknown)
    init_cos: np.ndarray | None  # cosine of decoder column j with itself at initialisation; None when unknown


def decoder_rows(d: Dictionary) -> np.ndarray:
    return d.decoder.T.numpy()  # (dict_size, d_in): features as rows


def fraction(mask: np.ndarray, within: np.ndarray | None = None) -> float:
    """The fraction of ``mask`` that is true (among ``within``); NaN when there is nothing to count."""
    base = mask if within is None else mask[within]
    return float(base.mean()) if base.size else float("nan")


def try_fit(v: np.ndarray, K: int, M: int) -> MixtureFit | None:
    """The two-component fit, or None where there are too few features to fit (a tiny dictionary)."""
    try:
        return fit_null_mixture(v, K, M)
    except DataError as exc:
        log.warning("no two-component fit for %d features: %s", v.size, exc)
        return None


def feature_table(d: Dictionary, ref: Dictionary, mcs: np.ndarray, cfg: AnalysisConfig) -> FeatureTable:
    enc = d.tensors.get("encoder.weight")
    dec = decoder_rows(d)
    if enc is not None:
        enc_cos = rowwise_cosine(enc.numpy(), dec)
    else:  # tied: encoder = D^T; imported: not known
        enc_cos = np.full(d.dict_size, 1.0 if d.config.sae.get("tied") else np.nan)
    ref_firing = ref.firing_frequency()
    live = ref_firing > 0 if ref_firing is not None else np.zeros(ref.dict_size, dtype=bool)
    if live.any():
        live_rows = decoder_rows(ref)[live]
        mcs_live = max_cosine_similarity(dec, live_rows, chunk_size=cfg.chunk_size, device=cfg.device)[0]
    else:
        mcs_live = np.full(d.dict_size, np.nan)
    return FeatureTable(
        mcs=mcs,
        mcs_live_ref=mcs_live,
        firing=d.firing_frequency(),
        enc_dec_cos=enc_cos,
        init_cos=rowwise_cosine(dec, init.T.numpy()) if (init := d.tensors.get("decoder_init")) is not None else None,
    )


def _median(values: np.ndarray) -> float | None:
    """The median, or None when there is nothing (or nothing known: NaN) to take it of."""
    return float(np.median(values)) if values.size and np.isfinite(values).all() else None


def liveness_row(j: int, s: int, t: FeatureTable, cfg: AnalysisConfig, q: float) -> dict:
    low = t.mcs < cfg.threshold
    dead = t.firing == 0
    return {
        "dict_size": j,
        "seed": s,
        "n_low": int(low.sum()),
        "low_dead_fraction": fraction(dead, low),  # low-MCS features that never fire
        "low_live_null_fraction": fraction(~dead & (t.mcs < q), low),  # fire, but as close as random vectors
        "high_dead_fraction": fraction(dead, ~low),
        "median_log10_freq_low": float(np.median(np.log10(t.firing[low & ~dead]))) if (low & ~dead).any() else None,
        "median_log10_freq_high": float(np.median(np.log10(t.firing[~low & ~dead]))) if (~low & ~dead).any() else None,
        "enc_dec_cos_low": _median(t.enc_dec_cos[low]),  # None: no such features, or the encoder is not known
        "enc_dec_cos_high": _median(t.enc_dec_cos[~low]),
        "high_fraction": fraction(~low),
        "high_fraction_live_ref": fraction(t.mcs_live_ref >= cfg.threshold),
    }


def movement_row(j: int, s: int, t: FeatureTable, cfg: AnalysisConfig) -> dict:
    low = t.mcs < cfg.threshold
    stayed = t.init_cos >= cfg.stay_cosine
    return {
        "dict_size": j,
        "seed": s,
        "n_low": int(low.sum()),
        "low_stayed": int((stayed & low).sum()),
        "low_stayed_fraction": fraction(stayed, low),
        "high_stayed_fraction": fraction(stayed, ~low),
        "median_init_cos_low": float(np.median(t.init_cos[low])) if low.any() else None,
        "median_init_cos_high": float(np.median(t.init_cos[~low])) if (~low).any() else None,
    }


def split_row(j: int, s: int, v: np.ndarray, fit: MixtureFit | None, cfg: AnalysisConfig, q: float) -> dict:
    """High-MCS fractions at the fixed threshold and at the null quantile, with intervals, and the fit's count."""
    hi, hi_lo, hi_hi = proportion_interval(v >= cfg.threshold, cfg.level)  # Wilson intervals
    nq, nq_lo, nq_hi = proportion_interval(v >= q, cfg.level)
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
        "mixture_null_shift": fit.shift if fit else None,  # how far the fitted null sits from the exact one
        "mixture_null_scale": fit.scale if fit else None,
        "mixture_n_real_exact_null": fit.n_real_exact_null if fit else None,  # the count if the exact null held
        "n_above_null_quantile": int(np.count_nonzero(v >= q)),
    }


def duplicates(best: np.ndarray, high: np.ndarray) -> tuple[int, int]:
    """(distinct reference atoms that high-MCS features match best, high-MCS features sharing their best match).

    ``best`` (J,): each feature's best-matching reference atom (the MCS argmax); ``high`` (J,) bool. A feature
    "shares" when another high-MCS feature has the same best match: one-to-one matching must then give all but one
    of them a worse partner, which is what separates Hungarian from plain max.
    """
    _, n_each = np.unique(best[high], return_counts=True)
    return int(n_each.size), int(n_each[n_each > 1].sum())


def matching_row(
    j: int, s: int, ref: int, a: np.ndarray, b: np.ndarray, v: np.ndarray, best: np.ndarray, cfg: AnalysisConfig
) -> dict:
    high = v >= cfg.threshold
    distinct, sharing = duplicates(best, high)
    row = {
        "dict_size": j,
        "seed": s,
        "reference": ref,
        "mmcs": float(v.mean()),
        "high_fraction_max": fraction(high),
        "n_high": int(high.sum()),
        "high_distinct_matches": distinct,  # reference atoms hit by the high-MCS features' best matches
        "high_sharing_match": sharing,  # high-MCS features whose best match is another's best match too
    }
    if max(j, ref) <= cfg.hungarian_max:
        _, _, cos = hungarian_match(a, b)
        row.update(hungarian_mean=float(cos.mean()), high_fraction_hungarian=fraction(cos >= cfg.threshold))
    else:
        row.update(hungarian_mean=None, high_fraction_hungarian=None)
    return row


def emd_ci_rows(res: Results, j: int, cfg: AnalysisConfig) -> list[dict]:
    """Every EMD of the size-j matrix with its bootstrap interval (both samples resampled)."""
    low = {k: v[v < cfg.cutoff] for k, v in emd_samples(res, j).items()}
    names = list(low)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if low[a].size == 0 or low[b].size == 0:
                continue
            value, lo, hi = emd_ci(low[a], low[b], cfg.n_boot, cfg.level, seed=cfg.seed + len(rows))
            rows.append({"dict_size": j, "a": a, "b": b, "emd": value, "lo": lo, "hi": hi})
    return rows
