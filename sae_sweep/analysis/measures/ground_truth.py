"""Synthetic data: each dictionary against the known true features it was trained to find."""

from __future__ import annotations

import numpy as np

from sae_sweep.analysis.measures.features import Key, decoder_rows, fraction
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.analysis.measures.mixture import MixtureFit
from sae_sweep.analysis.measures.pairwise import Results
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary


def recovered_fraction(true: np.ndarray, dec: np.ndarray, cfg: AnalysisConfig) -> float:
    """The fraction of true features (n_true, d_in) whose MCS over a dictionary's features (J, d_in) exceeds
    analysis.recovered_cosine."""
    true_mcs = max_cosine_similarity(true, dec, chunk_size=cfg.chunk_size, device=cfg.device)[0]  # (n_true,)
    return fraction(true_mcs > cfg.recovered_cosine)


def ground_truth_rows(
    res: Results, dicts: dict[Key, Dictionary], true: np.ndarray, cfg: AnalysisConfig, fits: dict[Key, MixtureFit]
) -> list[dict]:
    """Each dictionary against the true features of synthetic data: recovery, and where the low-MCS mode appears."""
    rows = []
    for (j, s), d in sorted(dicts.items()):
        dec = decoder_rows(d)
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
                "recovered_fraction": recovered_fraction(true, dec, cfg),
                "matched_fraction": fraction(dict_mcs > cfg.recovered_cosine),  # dictionary features that are true ones
                "low_vs_truth_fraction": fraction(
                    dict_mcs < cfg.threshold
                ),  # the low-MCS mode, scored against the truth
                "low_fraction": None if v is None else fraction(v < cfg.threshold),
                "mixture_n_real": None if fit is None else fit.n_real,
                "converged": res.converged.get((j, s)),
            }
        )
    return rows
