"""The main run against other references: anisotropic random nulls, the known truth of synthetic data, controls.

``anisotropic`` asks whether learned features are closer than random vectors that share the activations' covariance
(or are activation rows); ``ground_truth_rows`` scores synthetic-data dictionaries against their true features;
``control_rows`` puts other variants of a sweep (untrained GPT, resampling, smaller l1) beside the main run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sae_sweep.activations import cache_folder, open_activations
from sae_sweep.analysis.features import Key, decoder_rows, fraction, try_fit
from sae_sweep.analysis.mcs import max_cosine_similarity
from sae_sweep.analysis.mixture import MixtureFit
from sae_sweep.analysis.note import Results, learned_name, random_name
from sae_sweep.analysis.nulls import (
    activation_covariance,
    activation_dictionary,
    analytic_null_quantile,
    gaussian_dictionary,
    second_moment,
)
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.analysis.stats import emd
from sae_sweep.dictionary import Dictionary


def data_kind(d: Dictionary) -> str:
    """What a dictionary was trained on, as the controls compare it: synthetic data or activations (an imported SAE
    counts as synthetic when its export says so, as ours do)."""
    synthetic = d.config.synthetic or d.config.activations.get("data") == "synthetic"
    return "synthetic" if synthetic else "activations"


@dataclass
class Anisotropic:
    """The anisotropic-null comparison: one row per size, the samples behind Figure 16, or why it was skipped."""

    rows: list[dict] = field(default_factory=list)
    samples: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # size -> null name -> MCS
    note: str | None = None


def _activations_of(dicts: dict[Key, Dictionary], cache_dir: Path):
    for key in sorted({k for d in dicts.values() if (k := d.config.activations.get("key"))}):
        path = cache_folder(cache_dir, key)
        if (path / "meta.json").exists():
            return open_activations(path)
    return None


def anisotropic(res: Results, dicts: dict[Key, Dictionary], cfg: AnalysisConfig, cache_dir: Path) -> Anisotropic:
    """Random dictionaries from N(0, S) (S centred), N(0, E[x x^T]) (uncentred) and activation rows, beside the
    isotropic null, for every size."""
    out = Anisotropic()
    acts = _activations_of(dicts, cache_dir)
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
