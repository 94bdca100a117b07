"""Across seeds: the features two seeds share at the same size (shared fraction, PW-MCC), and the seed-to-seed spread
of every metric."""

from __future__ import annotations

import numpy as np

from sae_sweep.analysis.measures.features import Key, decoder_rows
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.analysis.measures.stats import shared_fraction
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary

SPREAD_METRICS = {
    "split": ("high_fraction", "high_null_fraction", "mixture_n_real"),
    "liveness": ("low_dead_fraction", "low_live_null_fraction", "high_fraction_live_ref"),
    "movement": ("low_stayed_fraction",),
    "matching": ("mmcs", "hungarian_mean"),
}


def seed_spread(tables: dict[str, list[dict]]) -> list[dict]:
    """Mean, range and (from three seeds on) standard deviation across seeds of every per-seed metric, per size.

    ``tables``: name -> rows. With two seeds the sample sd is only |a - b| / sqrt(2), a restatement of the range
    with the look of an estimate, so it is left empty (None) and the range stands alone.
    """
    rows = []
    for table, metrics in SPREAD_METRICS.items():
        by_size: dict[int, list[dict]] = {}
        for r in tables.get(table, []):
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
                        "sd": float(vals.std(ddof=1)) if vals.size >= 3 else None,
                        "min": float(vals.min()),
                        "max": float(vals.max()),
                        "range": float(vals.max() - vals.min()),
                    }
                )
    return rows


def shared_rows(dicts: dict[Key, Dictionary], seeds: list[int], cfg: AnalysisConfig) -> list[dict]:
    rows = []
    for j in sorted({k[0] for k in dicts}):
        have = [s for s in seeds if (j, s) in dicts]
        for i, sa in enumerate(have):
            for sb in have[i + 1 :]:
                a, b = decoder_rows(dicts[(j, sa)]), decoder_rows(dicts[(j, sb)])
                v = max_cosine_similarity(a, b, chunk_size=cfg.chunk_size, device=cfg.device)[0]
                row = {"dict_size": j, "seed_a": sa, "seed_b": sb, "mmcs": float(v.mean())}
                if j <= cfg.hungarian_max:
                    frac, cos = shared_fraction(a, b, cfg.shared_cosine)
                    # PW-MCC (Song et al. 2025): the mean cosine of the one-to-one matching between the two runs
                    row.update(shared_fraction=frac, pw_mcc=float(np.nanmean(cos)))
                else:
                    row.update(shared_fraction=None, pw_mcc=None)
                rows.append(row)
    return rows
