"""Across SAE architectures (issue 16): does the note's bimodality hold for TopK, BatchTopK and JumpReLU SAEs, and
is ReLU + L1 more stable across seeds than TopK here, as Paulo & Belrose (2025) found?

Each architecture's dictionaries form a variant (``sae.arch``, recorded in every config.json). ``architecture_rows``
gives one row per (architecture, data, size): on the first seed the high-MCS fraction against the variant's own
reference size (Wilson interval), the two-component fit's verdict, and the low mode's W1 to Rand 1 with its
permutation p; across the first two seeds the shared fraction (Hungarian cosine >= analysis.shared_cosine, Wilson
interval) and PW-MCC; on synthetic data the fraction of true features recovered.

The verdicts, each a stated comparison (``bimodal``, ``stability``):

* an architecture "shows the two modes" at a size when the two-component fit (mixture.py) keeps its learned Beta by
  BIC, that component's mean MCS is at least ``analysis.threshold``, and each component holds at least
  ``MIN_MODE`` of the features: a null-like mode and a high mode, as the note's Figure 3;
* the cross-seed ordering is read, size by size, from the Newcombe score interval of the difference of the shared
  fractions (ReLU minus TopK): above 0, ReLU is more stable; below 0, TopK is; covering 0, no difference detected.
"""

from __future__ import annotations

import numpy as np

from sae_sweep.analysis.measures.controls import data_kind
from sae_sweep.analysis.measures.features import decoder_rows, try_fit
from sae_sweep.analysis.measures.ground_truth import recovered_fraction
from sae_sweep.analysis.measures.inference import score_difference, wilson_interval
from sae_sweep.analysis.measures.low_mode import permutation_row
from sae_sweep.analysis.measures.pairwise import Results
from sae_sweep.analysis.measures.seeds import shared_rows
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary

MIN_MODE = 0.05  # each of the two modes holds at least this fraction of the features


def arch_of(dicts: dict) -> str | None:
    """The architecture of a variant's dictionaries ("relu" for those trained before sae.arch; None if imported)."""
    config = next(iter(dicts.values())).config
    return None if config.imported else config.sae.get("arch", "relu")


def two_modes(v: np.ndarray, K: int, M: int, threshold: float) -> tuple[bool, str]:
    """Whether MCS values ``v`` show a null-like mode and a high mode (see the module docstring), and why."""
    fit = try_fit(v, K, M)
    if fit is None:
        return False, "no fit (too few features)"
    learned = 1 - fit.null_weight
    mean = fit.a / (fit.a + fit.b)
    if fit.n_real == 0:
        return False, "BIC keeps the null alone"
    if mean < threshold:
        return False, f"the learned component sits at MCS {mean:.2f}, below {threshold}"
    if min(learned, fit.null_weight) < MIN_MODE:
        return False, f"one component holds {100 * min(learned, fit.null_weight):.1f}% of the features"
    return True, f"null-like {100 * fit.null_weight:.1f}%, high mode {100 * learned:.1f}% at mean MCS {mean:.2f}"


def _low_mode(res: Results, j: int, s: int, cfg: AnalysisConfig, v: np.ndarray, seed: int) -> tuple[float, float]:
    row = permutation_row(j, s, "isotropic", v, res.random[j][0], cfg, seed) if j in res.random else None
    return (row["emd"], row["p"]) if row else (float("nan"), float("nan"))


def tag_of(dicts: dict) -> str:
    """The ``sae.tag`` a variant's dictionaries were trained with ("" for none)."""
    return next(iter(dicts.values())).config.sae.get("tag") or ""


def _baseline(runs: dict[str, tuple], data: str, tag: str, baselines: list[str]) -> str | None:
    """The ReLU run a group of other architectures is set beside: with a tag, the ReLU variant trained under the
    same tag on the same data (experiment=architectures' one-pass arm: equal budgets), the shortest-named if several;
    without one, or when there is none, the first of ``baselines`` on that data (the main run, the synthetic run)."""
    same = [v for v, run in runs.items() if arch_of(run[1]) == "relu" and (_data(run), tag_of(run[1])) == (data, tag)]
    if tag and same:
        return min(same, key=lambda v: (len(v), v))
    return next((b for b in dict.fromkeys(baselines) if b in runs and _data(runs[b]) == data), None)


def _data(run: tuple) -> str:
    return data_kind(next(iter(run[1].values())))


def architecture_table(runs: dict[str, tuple], baselines: list[str], cfg: AnalysisConfig) -> list[dict]:
    """Rows for every variant of an architecture other than ReLU, grouped by data and ``sae.tag`` (the ``tag``
    column), each group after the ReLU run it is set beside (``_baseline``); none when no other architecture was
    trained.

    ``runs``: variant -> (Results, dictionaries, true features or None, shared-seed rows or None: computed here).
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for v in sorted(runs):
        if arch_of(runs[v][1]) not in (None, "relu"):
            groups.setdefault((_data(runs[v]), tag_of(runs[v][1])), []).append(v)
    rows = []
    for (data, tag), variants in sorted(groups.items()):
        base = _baseline(runs, data, tag, baselines)
        for v in ([base] if base is not None and base not in variants else []) + variants:
            rows += [{"arch": r["arch"], "variant": r["variant"], "data": r["data"], "tag": tag} | r
                     for r in architecture_rows(v, *runs[v], cfg=cfg)]  # fmt: skip
    return rows


def _against_reference(res: Results, j: int, s: int, cfg: AnalysisConfig) -> dict:
    """The MCS columns of size j, seed s against the reference: high-MCS fraction, two modes, low mode vs Rand 1."""
    v = res.vs_reference(j, s)
    if v is None:  # the reference itself
        keys = ("high_fraction", "high_lo", "high_hi", "two_modes", "modes_why", "low_emd_rand1", "low_p")
        return dict.fromkeys(keys)
    high = int(np.count_nonzero(v >= cfg.threshold))
    lo, hi = wilson_interval(high, v.size, cfg.level)
    modes, why = two_modes(v, res.d_in, res.reference, cfg.threshold)
    seed = int(np.random.SeedSequence([cfg.seed, 16, j, s]).generate_state(1)[0])
    emd, p = _low_mode(res, j, s, cfg, v, seed)
    return {"high_fraction": high / v.size, "high_lo": lo, "high_hi": hi, "two_modes": modes, "modes_why": why,
            "low_emd_rand1": emd, "low_p": p}  # fmt: skip


def architecture_rows(
    variant: str,
    res: Results,
    dicts: dict[tuple[int, int], Dictionary],
    true: np.ndarray | None = None,
    shared: list[dict] | None = None,
    *,
    cfg: AnalysisConfig,
) -> list[dict]:
    """One row per size of one variant (its first seed; shared features between its first two seeds)."""
    arch = arch_of(dicts)
    if arch is None or not res.seeds:
        return []
    s = res.seeds[0]
    if shared is None:
        shared = shared_rows(dicts, res.seeds[:2], cfg) if len(res.seeds) > 1 else []
    first = set(res.seeds[:2])
    shared = {r["dict_size"]: r for r in shared if {r["seed_a"], r["seed_b"]} == first}
    rows = []
    for j in res.sizes:  # the reference size too: its shared fraction and recovery, with no MCS against itself
        mcs = _against_reference(res, j, s, cfg)
        rec = None if true is None else recovered_fraction(true, decoder_rows(dicts[(j, s)]), cfg)
        r_lo, r_hi = wilson_interval(round(rec * len(true)), len(true), cfg.level) if rec is not None else (None, None)
        sh = shared.get(j) or {}
        frac = sh.get("shared_fraction")
        s_lo, s_hi = wilson_interval(round(frac * j), j, cfg.level) if frac is not None else (None, None)
        d = dicts[(j, s)]
        rows.append(
            {
                "arch": arch,
                "variant": variant or "(note)",
                "data": data_kind(d),
                "dict_size": j,
                "reference": res.reference,
                "seed": s,
                "activations_seen": (d.config.training or {}).get("activations_seen"),
                "converged": res.converged.get((j, s)),
                "l0": d.config.metrics.get("val/l0"),
                "fvu": d.config.metrics.get("val/fvu"),
                **mcs,
                "shared_fraction": frac,
                "shared_lo": s_lo,
                "shared_hi": s_hi,
                "pw_mcc": sh.get("pw_mcc"),
                "recovered_fraction": rec,
                "recovered_lo": r_lo,
                "recovered_hi": r_hi,
            }
        )
    return rows


def stability(table: list[dict], level: float) -> list[dict]:
    """ReLU minus TopK shared fraction per (data, tag, size) where both have one: (difference, lo, hi, verdict)."""
    out = []
    for data, tag in sorted({(r["data"], r.get("tag", "")) for r in table}):
        group = [r for r in table if (r["data"], r.get("tag", "")) == (data, tag)]
        by = {(r["arch"], r["dict_size"]): r for r in group if r["shared_fraction"] is not None}
        for j in sorted({j for a, j in by if a == "relu"} & {j for a, j in by if a == "topk"}):
            a, b = by[("relu", j)], by[("topk", j)]
            k_relu, k_topk = round(a["shared_fraction"] * j), round(b["shared_fraction"] * j)
            diff, lo, hi = score_difference(k_relu, j, k_topk, j, level)
            verdict = "relu" if lo > 0 else "topk" if hi < 0 else "none"
            seen = {"relu_seen": a.get("activations_seen"), "topk_seen": b.get("activations_seen")}
            out.append({"data": data, "tag": tag, "dict_size": j, "difference": diff, "lo": lo, "hi": hi,
                        "more_stable": verdict, **seen})  # fmt: skip
    return out
