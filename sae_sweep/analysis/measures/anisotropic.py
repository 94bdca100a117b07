"""Anisotropic random nulls: are learned features closer than random vectors that share the activations' geometry?

Random dictionaries from N(0, S) (S the activations' covariance, centred), from N(0, E[x x^T]) (the uncentred second
moment, which keeps the mean a bias-free decoder must span) and dictionaries of random activation rows, each scored
against a random dictionary of the reference's size drawn the same way, beside the isotropic N(0, I) null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sae_sweep.analysis.measures.features import Key, fraction
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.analysis.measures.nulls import (
    activation_covariance,
    activation_dictionary,
    gaussian_dictionary,
    second_moment,
)
from sae_sweep.analysis.measures.pairwise import Results
from sae_sweep.analysis.measures.stats import emd
from sae_sweep.analysis.measures.verdicts import activation_cache
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary


@dataclass
class Anisotropic:
    """The anisotropic-null comparison: one row per size, the samples behind Figure 16, or why it was skipped."""

    rows: list[dict] = field(default_factory=list)
    samples: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # size -> null name -> MCS
    note: str | None = None


def anisotropic(res: Results, dicts: dict[Key, Dictionary], cfg: AnalysisConfig, cache_dir: Path) -> Anisotropic:
    """Random dictionaries from N(0, S) (S centred), N(0, E[x x^T]) (uncentred) and activation rows, beside the
    isotropic null, for every size."""
    out = Anisotropic()
    acts = activation_cache(dicts, cache_dir)
    if acts is None:
        out.note = (
            "anisotropic nulls skipped: the activation cache these dictionaries were trained on is not under "
            f"{cache_dir} (it is local to the machine that trained them)"
        )
        return out
    mean, cov = activation_covariance(acts.train)
    moment = second_moment(mean, cov, acts.train.shape[0])
    ref, seed = res.reference, res.seeds[0]
    seeds = [int(x.generate_state(1)[0]) for x in np.random.SeedSequence([cfg.seed, 6]).spawn(5)]
    s_ref, s_small, s_acts, s_mref, s_msmall = seeds
    gauss_ref, moment_ref = gaussian_dictionary(ref, cov, s_ref), gaussian_dictionary(ref, moment, s_mref)
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
            "gaussian_moment": max_cosine_similarity(
                gaussian_dictionary(j, moment, s_msmall + j), moment_ref, chunk_size=cfg.chunk_size, device=cfg.device
            )[0],
            "activation_rows": max_cosine_similarity(rows[:j], rows[j:], chunk_size=cfg.chunk_size, device=cfg.device)[
                0
            ],
        }
        out.samples[j] = {"learned": learned, **nulls}
        row = {"dict_size": j, "seed": seed}
        low = learned[learned < cfg.cutoff]
        for name, v in nulls.items():
            v_low = v[v < cfg.cutoff]
            row[f"{name}_high_fraction"] = fraction(v >= cfg.threshold)
            row[f"emd_full_{name}"] = emd(learned, v)
            row[f"emd_low_{name}"] = emd(low, v_low) if low.size and v_low.size else None
        out.rows.append(row)
    return out
