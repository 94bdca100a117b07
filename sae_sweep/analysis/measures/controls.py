"""Controls: the other variants of a sweep (untrained GPT, resampling, a smaller l1, the transpose start, synthetic
data), one row per dictionary, to set beside the main run's on the same kind of data."""

from __future__ import annotations

import numpy as np

from sae_sweep.analysis.measures.features import Key, fraction, try_fit
from sae_sweep.analysis.measures.mixture import MixtureFit
from sae_sweep.analysis.measures.nulls import analytic_null_quantile
from sae_sweep.analysis.measures.pairwise import Results, learned_name, random_name
from sae_sweep.dictionary import Dictionary


def data_kind(d: Dictionary) -> str:
    """What a dictionary was trained on, as the controls compare it: synthetic data or activations (an imported SAE
    counts as synthetic when its export says so, as ours do)."""
    synthetic = d.config.synthetic or d.config.activations.get("data") == "synthetic"
    return "synthetic" if synthetic else "activations"


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
            fit = (fits or {}).get((j, s)) or try_fit(v, res.d_in, res.reference)
            d = dicts[(j, s)]
            metrics, firing = d.config.metrics, d.firing_frequency()
            rows.append(
                {
                    "variant": variant or "(note)",
                    "dict_size": j,
                    "seed": s,
                    "reference": res.reference,
                    "data": data_kind(d),  # controls compare like with like
                    "n": v.size,
                    "high": int(np.count_nonzero(v >= cfg.threshold)),
                    "high_fraction": fraction(v >= cfg.threshold),
                    "high_null_fraction": fraction(v >= q),
                    "mixture_n_real": fit.n_real if fit else None,
                    "low_dead_fraction": None if firing is None else fraction(firing == 0, v < cfg.threshold),
                    "dead_fraction": metrics.get("val/dead_fraction"),  # None: imported, not evaluated here
                    "fvu": metrics.get("val/fvu"),
                    "l0": metrics.get("val/l0"),
                    "n_resampled": d.config.n_resampled,
                    "emd_learned_rand1": res.emd_between(j, learned_name(s, res.seeds), random_name(1)),
                    "converged": res.converged.get((j, s)),
                    "gpt_val_loss": (d.config.gpt or {}).get("val_loss"),  # None on synthetic data and older folders
                }
            )
    return rows
