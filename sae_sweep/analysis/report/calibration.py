"""Section "How the match floor was set": the calibration of the verdicts' cosine floor on a parametric bootstrap of
the data analysed (measures/calibration.py), size by size. Figure 23 (precision and recall of ``real`` at every floor
tried, the chosen one marked), calibration.csv, verdict_recall.csv (on synthetic data: each dictionary's measured
precision and recall beside the estimate), and their Findings."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from sae_sweep.analysis.measures.calibration import Calibration, precision_at, precision_bound, run_calibration
from sae_sweep.analysis.measures.inference import wilson_interval
from sae_sweep.analysis.measures.verdict_checks import replicable_rows
from sae_sweep.analysis.measures.verdicts import atoms_of, feature_verdicts
from sae_sweep.analysis.report.plots import save
from sae_sweep.analysis.report.section import Plot, ReportInput, Section, Table, pct

HOW_TO = "python analyze.py analysis.calibrate=true"


def calibration_of(run) -> Calibration | None:
    return run.measured(run_calibration) if run is not None else None


def calibration_rows(rep: ReportInput) -> list[dict]:
    """calibration.csv: per size of the main run, the floor chosen and the estimated recall at it."""
    cal = calibration_of(rep.run)
    if cal is None:
        return []
    keep = (
        "dict_size",
        "truth_from",
        "n_true",
        "replicable",
        "activations",
        "floor",
        "reached",
        "precision",
        "precision_lo",
    )
    return [{**{k: getattr(c, k) for k in keep}, "recall": c.recall, "recall_lo": c.recall_lo,
             "recall_hi": c.recall_hi} for c in cal.sizes.values()]  # fmt: skip


def _measured(run) -> list[dict]:
    """Each dictionary's precision and replicable recall against the truth, beside its estimate (synthetic data)."""
    cal = calibration_of(run)
    v = run.measured(feature_verdicts)
    return replicable_rows(v, atoms_of(run), run.true_features, run.results.config, cal.sizes if cal else None)


def recall_rows(rep: ReportInput) -> list[dict]:
    """verdict_recall.csv: ``_measured`` of the main run on synthetic data, else of the synthetic control."""
    run = rep.run if rep.run.true_features is not None else rep.synthetic
    return run.measured(_measured) if run is not None and run.true_features is not None else []


def fig_calibration(rep: ReportInput, path: Path) -> Path | None:
    """Figure 23: per size, the bootstrap's precision (the smaller of its two dictionaries') and recall of the
    replicable truth at every floor, the chosen floor marked."""
    cal = calibration_of(rep.run)
    if cal is None:
        return None
    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2, sharex=True)
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(cal.sizes.values()):
        colour = cycle[i % len(cycle)]
        floors = np.array([r["floor"] for r in c.curve])
        prec = np.array([np.nan if (b := precision_bound(r, rep.cfg.level)) is None else b for r in c.curve])
        rec = np.array([r["found"] / r["replicable"] if r["replicable"] else np.nan for r in c.curve])
        a1.plot(floors, prec, color=colour, label=f"J={c.dict_size}")
        a2.plot(floors, rec, color=colour, label=f"J={c.dict_size}")
        a1.axvline(c.floor, color=colour, ls=":", lw=1)
        a2.plot([c.floor], [c.recall if c.recall is not None else np.nan], "o", color=colour)
    target = rep.cfg.calibration_precision
    a1.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
    a1.set(xlabel="cosine floor", ylabel="precision of real, lower end (bootstrap)", ylim=(0, 1.02),
           title="precision: the floor is the lowest reaching the target")  # fmt: skip
    a2.set(xlabel="cosine floor", ylabel="recall of the replicable truth (bootstrap)", ylim=(0, 1.02),
           title="recall: the estimate at the chosen floor (dot)")  # fmt: skip
    a1.legend(fontsize=7)
    fig.suptitle("Fig. 23: the match floor, calibrated on a parametric bootstrap of the data")
    return save(fig, path)


def _text(rep: ReportInput) -> str:
    cal = calibration_of(rep.run)
    if cal is None:
        return (
            f"Recall was not estimated: the verdicts use the fixed floor analysis.match_cosine = "
            f"{rep.cfg.match_cosine:g} and no calibration of these dictionaries is in the cache (`{HOW_TO}` makes "
            "one: two SAEs per size on a bootstrap of the data, then every later analysis uses it)."
        )
    return (
        f"A feature is found again in another seed when its match there is beyond the null and at least a cosine floor "
        f"close. The floor of each size was set from the data analysed: {cal.how} (the target: the lower end of the "
        f"{rep.cfg.level:.0%} Wilson interval of the precision at least {rep.cfg.calibration_precision:g}, "
        "`analysis.calibration_precision`). Precision is the share of real "
        f"calls within {rep.cfg.recovered_cosine:g} of a true feature (the bootstrap's truth: the first seed's live "
        "atoms); recall the share of the true features that both bootstrap SAEs hold within it whose nearest atom is "
        f"called real, with the {rep.cfg.level:.0%} prediction interval of the recall one dictionary of the size "
        "shows (beta-binomial). `calibration.csv` gives each size's floor and estimate; "
        "`verdicts.csv` repeats them beside each dictionary's counts."
    )


def estimates(rep: ReportInput) -> str | None:
    """The estimated recall of ``real`` per size: what "unreplicated" may hide."""
    rows = calibration_rows(rep)
    if not rows:
        return None
    parts = "; ".join(
        f"J={r['dict_size']}: floor {r['floor']:.2f}, recall {pct(r['recall'])} [{pct(r['recall_lo'])}, "
        f"{pct(r['recall_hi'])}]" + ("" if r["reached"] else " (no floor reached the target precision)")
        for r in rows
    )
    return (
        f"On a parametric bootstrap of these activations, the calibrated verdicts call real this share of the features "
        "that two seeds both learn (the lower end of the precision's interval at least "
        f"{rep.cfg.calibration_precision:g} there): {parts}. "
        "A feature called unreplicated is not thereby shown not to be real: the rest of those features are among them."
        + _fixed_floor(rep)
    )


def _fixed_floor(rep: ReportInput) -> str:
    """Where no floor reached the target: how precise the fixed floor's real calls were on the same bootstrap, so
    that a reader knows what the uncalibrated verdicts would have claimed on these data."""
    cal, floor = calibration_of(rep.run), rep.cfg.match_cosine
    shown = [(j, precision_at(c, floor)) for j, c in cal.sizes.items() if not c.reached]
    shown = [(j, rc) for j, rc in shown if rc is not None and rc[1]]
    if not shown:
        return ""
    parts = []
    for j, (right, called) in shown:
        lo, hi = wilson_interval(right, called, rep.cfg.level)
        parts.append(f"J={j}: {right} of {called} ({pct(right / called)}, {rep.cfg.level:.0%} interval "
                     f"[{pct(lo)}, {pct(hi)}])")  # fmt: skip
    return (
        f" Where no floor reached it, the fixed floor analysis.match_cosine = {floor:g} called real on the bootstrap "
        f"this many features within {rep.cfg.recovered_cosine:g} of a true one, of all it called: {'; '.join(parts)}."
    )


def measured(rep: ReportInput) -> str | None:
    """On synthetic data: each dictionary's measured precision and recall against the estimate's interval."""
    rows = [r for r in recall_rows(rep) if r["inside"] is not None]
    if not rows:
        return None
    inside = sum(r["inside"] for r in rows)
    precise = sum(r["precision"] is None or r["precision"] >= 0.95 for r in rows)
    low = min((r["recall"] for r in rows), default=None)
    return (
        f"Against the true features, per dictionary: precision of real at least 0.95 in {precise} of {len(rows)} "
        f"dictionaries; the measured recall of the replicable truth lies inside the bootstrap's {rep.cfg.level:.0%} "
        f"interval in {inside} of {len(rows)} (lowest recall {pct(low)}; `verdict_recall.csv`)."
    )


SECTION = Section(
    heading="How the match floor was set",
    text=_text,
    plot=Plot("fig23", "fig23_calibration.png", fig_calibration),
    tables=(
        Table("the floor per size and its estimated recall", "calibration.csv", calibration_rows, optional=True),
        Table("against the truth, per dictionary", "verdict_recall.csv", recall_rows, optional=True),
    ),
    findings=(estimates, measured),
)
