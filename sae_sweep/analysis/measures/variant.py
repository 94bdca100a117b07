"""One variant's measures gathered: the note's pairwise numbers (``Results``) and everything beyond them
(``VariantMeasures``), as one ``AnalysedRun`` the report is written from.

The note leaves open whether low-MCS features are dead, fits to noise, or real features a larger dictionary missed,
and rests on one threshold, one matching rule, isotropic nulls and no error bars. ``measure_variant`` adds, for one
run's ``Results``: liveness, movement, matching beyond max, a principled split (features.py); the low mode against
two nulls (low_mode.py); the seed-to-seed spread and features shared across seeds (seeds.py); anisotropic nulls
(anisotropic.py) and, on synthetic data, the ground truth (ground_truth.py); and, where dictionaries kept snapshots,
the same measures along the training budget (budget.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from sae_sweep.analysis.measures.anisotropic import anisotropic
from sae_sweep.analysis.measures.budget import Budget, compute_budget
from sae_sweep.analysis.measures.features import (
    FeatureTable,
    Key,
    decoder_rows,
    emd_ci_rows,
    feature_table,
    liveness_row,
    matching_row,
    movement_row,
    split_row,
    try_fit,
)
from sae_sweep.analysis.measures.ground_truth import ground_truth_rows
from sae_sweep.analysis.measures.low_mode import low_mode_tests
from sae_sweep.analysis.measures.mixture import MixtureFit
from sae_sweep.analysis.measures.nulls import analytic_null_quantile
from sae_sweep.analysis.measures.pairwise import Results
from sae_sweep.analysis.measures.seeds import seed_spread, shared_rows
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary

T = TypeVar("T")


@dataclass
class VariantMeasures:
    """Every measure beyond the note of one variant's dictionaries, as rows (one list per table) and arrays."""

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
    low_tests: list[dict] = field(default_factory=list)  # the low mode against two nulls (low_mode.py)
    spread: list[dict] = field(default_factory=list)
    anisotropic: list[dict] = field(default_factory=list)
    anisotropic_samples: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # size -> null -> MCS
    ground_truth: list[dict] = field(default_factory=list)
    budget: Budget | None = None  # the training-budget axis (budget.py); None when no dictionary has snapshots
    notes: list[str] = field(default_factory=list)

    def featured(self, res: Results) -> FeatureTable | None:
        """The feature table of the featured size's first seed (of the first dictionary when it has none)."""
        return self.features.get((res.featured, res.seeds[0])) or next(iter(self.features.values()), None)


def _skipped(ex: VariantMeasures, keys: list[Key]) -> list[str]:
    """One line for each per-feature measure some dictionaries could not have (SAEs trained elsewhere)."""
    lines = []
    no_firing = [k for k in keys if ex.features[k].firing is None]
    if no_firing:
        lines.append(
            f"liveness (firing frequency, Figure 13) skipped for {len(no_firing)} dictionaries: they carry no held-out "
            "firing counts (imported without a SAELens sparsity.safetensors)"
        )
    no_init = [k for k in keys if ex.features[k].init_cos is None]
    if no_init:
        lines.append(
            f"movement from initialisation (Figure 14) skipped for {len(no_init)} dictionaries: their initial decoder "
            "was not saved (imported)"
        )
    return lines


@dataclass
class AnalysedRun:
    """One variant's name, the note's numbers on its dictionaries, everything beyond them, and the dictionaries."""

    variant: str
    results: Results
    measures: VariantMeasures
    dicts: dict[Key, Dictionary] = field(default_factory=dict)
    cache_dir: Path | None = None  # where the activation caches are (the verdicts' null reads them)
    true_features: np.ndarray | None = None  # (n_true, d_in) on synthetic data
    floors: dict[int, float] = field(default_factory=dict)  # dict size -> its calibrated match floor (set by
    #                                                          calibration.attach); none: analysis.match_cosine
    _measured: dict = field(default_factory=dict, repr=False)

    def measured(self, measure: Callable[[AnalysedRun], T]) -> T:
        """``measure(self)``, computed on first use and kept: a report section's own measure, which its table, figure
        and Findings share without a field here."""
        if measure not in self._measured:
            self._measured[measure] = measure(self)
        return self._measured[measure]


def measure_variant(
    res: Results,
    dicts: dict[Key, Dictionary],
    cfg: AnalysisConfig,
    variant: str = "",
    cache_dir: Path | None = None,
    true_features: np.ndarray | None = None,
    progress=None,
) -> VariantMeasures:
    """Everything beyond the note for one run. ``cache_dir``: where the activation caches are (anisotropic nulls)."""
    track = progress or (lambda it, total, description: it)
    ref = res.reference
    null_q = {M: analytic_null_quantile(cfg.null_quantile, res.d_in, M) for M in sorted({ref, *res.sizes})}
    ex = VariantMeasures(variant, null_q)
    q = ex.null_q[ref]
    keys = [(j, s) for s in res.seeds for j in res.sizes if j < ref and res.vs_reference(j, s) is not None]
    for j, s in track(keys, len(keys), "features beyond max"):
        v = res.vs_reference(j, s)
        t = feature_table(dicts[(j, s)], dicts[(ref, s)], v, cfg)
        ex.features[(j, s)] = t
        fit = try_fit(v, res.d_in, ref)
        if fit is not None:
            ex.fits[(j, s)] = fit
        if t.firing is not None:
            ex.liveness.append(liveness_row(j, s, t, cfg, q))
        if t.init_cos is not None:
            ex.movement.append(movement_row(j, s, t, cfg))
        ex.split.append(split_row(j, s, v, fit, cfg, q))
        ex.split[-1]["converged"] = res.converged.get((j, s))
        best = res.mcs[(j, s, ref, s)][1]  # (j,) each feature's best reference atom
        a, b = decoder_rows(dicts[(j, s)]), decoder_rows(dicts[(ref, s)])
        ex.matching.append(matching_row(j, s, ref, a, b, v, best, cfg))
    for j in track(sorted(res.emd), len(res.emd), "bootstrap EMDs"):
        ex.emd_ci += emd_ci_rows(res, j, cfg)
    ex.notes += _skipped(ex, keys)
    ex.low_tests = low_mode_tests(res, dicts, cfg)
    ex.shared = shared_rows(dicts, res.seeds, cfg)
    ex.spread = seed_spread(
        {"split": ex.split, "liveness": ex.liveness, "movement": ex.movement, "matching": ex.matching}
    )
    if cache_dir is not None and keys:
        found = anisotropic(res, dicts, cfg, cache_dir)
        ex.anisotropic, ex.anisotropic_samples = found.rows, found.samples
        ex.notes += [found.note] if found.note else []
    if true_features is not None:
        ex.ground_truth = ground_truth_rows(res, dicts, true_features, cfg, ex.fits)
    ex.budget = compute_budget(res, dicts, variant, true_features)
    return ex
