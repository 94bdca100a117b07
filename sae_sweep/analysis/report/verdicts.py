"""Section "Which features are real": the per-feature verdicts (measures/verdicts.py) of the main run, beside the
note's split, and against the truth on synthetic data. Figure 21, features.csv (a row per feature), verdicts.csv,
verdict_split.csv, verdict_truth.csv and verdict_truth_budget.csv, and their Findings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sae_sweep.analysis.measures.calibration import run_calibration
from sae_sweep.analysis.measures.row_null import row_null
from sae_sweep.analysis.measures.verdict_checks import budget_truth_rows, split_rows, table_names, truth_rows
from sae_sweep.analysis.measures.verdicts import VERDICTS, Verdicts, activations_of, atoms_of, feature_verdicts
from sae_sweep.analysis.report.plots import save
from sae_sweep.analysis.report.section import Plot, ReportInput, Section, Table, pct
from sae_sweep.analysis.report.tables import first_seed_rows

COLOURS = {"real": "tab:green", "unreplicated": "tab:orange", "dead": "tab:gray", "no_reference": "tab:purple"}


def _verdicts(rep: ReportInput) -> Verdicts:
    return rep.run.measured(feature_verdicts)


def _truth(run) -> tuple[list[dict], list[dict]]:
    """(per size, per budget and size) precision and recall against the truth; none without true features."""
    if run.true_features is None:
        return [], []
    v = run.measured(feature_verdicts)
    cfg = run.results.config
    acts = activations_of(run.dicts, run.cache_dir) if {"moment", "rows"} & set(v.nulls) else None
    sizes = truth_rows(v, atoms_of(run), run.true_features, cfg)
    return sizes, budget_truth_rows(run.dicts, run.true_features, cfg, acts)


def _truth_of(rep: ReportInput) -> tuple[list[dict], list[dict]]:
    """``_truth`` of the main run on synthetic data, else of the synthetic control; nothing without either."""
    run = rep.run if rep.run.true_features is not None else rep.synthetic
    return run.measured(_truth) if run is not None else ([], [])


def _split(rep: ReportInput) -> list[dict]:
    return split_rows(_verdicts(rep), rep.cfg)


def feature_rows(rep: ReportInput) -> list[dict]:
    """features.csv: the main run's table, then the synthetic control's; NaN and -1 (does not apply) left empty."""
    tables = [r.measured(feature_verdicts).table for r in (rep.run, rep.synthetic) if r is not None]
    rows = []
    for t in tables:
        for rec in t.tolist():
            rows.append({k: _cell(v) for k, v in zip(t.dtype.names, rec, strict=True)})
    return rows


def _cell(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def count_rows(rep: ReportInput) -> list[dict]:
    """verdicts.csv: per dictionary, how many features get each verdict."""
    v = _verdicts(rep)
    cal = rep.run.measured(run_calibration)
    out = []
    for name in table_names(v.table):
        t = v.table[v.table["name"] == name]
        j = int(t["dict_size"][0])
        est = cal.sizes.get(j) if cal else None
        counts = {k: int((t["verdict"] == k).sum()) for k in VERDICTS}
        stab = t["stability"][np.isfinite(t["stability"])]
        out.append({"name": name, "dict_size": j, "seed": int(t["seed"][0]), "n": len(t),
                    **counts, "real_fraction": counts["real"] / len(t),
                    "median_stability": float(np.median(stab)) if stab.size else None,
                    "nulls": "+".join(v.nulls), "match_floor": v.floor(j, rep.cfg),
                    "floor_from": "calibration" if est else "analysis.match_cosine",
                    "estimated_recall": est.recall if est else None,
                    "estimated_recall_lo": est.recall_lo if est else None,
                    "estimated_recall_hi": est.recall_hi if est else None})  # fmt: skip
    return out


def fig_verdicts(rep: ReportInput, path: Path) -> Path | None:
    """Figure 21: the share of each verdict by size (first seed, stacked) and the stability scores of every live
    feature of the main run (log scale: most are 0)."""
    counts = first_seed_rows(count_rows(rep))
    if not counts:
        return None
    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2)
    x = np.arange(len(counts))
    bottom = np.zeros(len(counts))
    for verdict in VERDICTS:
        height = np.array([r[verdict] / r["n"] for r in counts])
        a1.bar(x, height, bottom=bottom, color=COLOURS[verdict], label=verdict)
        for xi, r, h, b in zip(x, counts, height, bottom, strict=True):
            if verdict == "real" and r["real"]:
                a1.text(xi, b + h, str(r["real"]), ha="center", va="bottom", fontsize=7)
        bottom += height
    a1.set_xticks(x, [str(r["dict_size"]) for r in counts])
    a1.set(xlabel="dictionary size (number: real features)", ylabel="share of features", ylim=(0, 1),
           title=f"verdicts, seed {counts[0]['seed']}")  # fmt: skip
    a1.legend(fontsize=7, loc="upper right")
    t = _verdicts(rep).table
    stab = t["stability"][np.isfinite(t["stability"]) & (t["verdict"] != "dead")]
    a2.hist(stab, bins=np.linspace(0, 1, 21), color="tab:green", log=True)
    a2.set(xlabel="stability (share of other-seed dictionaries that find it)", ylabel="live features (log)",
           title="stability scores, every live feature")  # fmt: skip
    fig.suptitle("Fig. 21: which features are real")
    return save(fig, path)


def per_size(rep: ReportInput) -> str | None:
    """The verdicts of the first seed, size by size, and where the fixed split and the test disagree."""
    v = _verdicts(rep)
    counts = first_seed_rows(count_rows(rep))
    if not counts:
        return None
    if all(r["no_reference"] + r["dead"] == r["n"] for r in counts):
        return (
            "No feature is called real: each dictionary has fewer other seeds than analysis.min_replications "
            f"({rep.cfg.min_replications}), so no independent reference to be found again in (train a second seed: "
            "`sae.seed=0,1`)."
        )
    parts = "; ".join(f"J={r['dict_size']}: {r['real']} real, {r['unreplicated']} unreplicated, {r['dead']} dead"
                      for r in counts)  # fmt: skip
    calibrated = rep.run.measured(run_calibration) is not None
    floors = "the calibrated floor of its size" if calibrated else f"cosine >= {rep.cfg.match_cosine:g}"
    text = (
        f"Feature by feature (seed {counts[0]['seed']}; real: found again in another seed beyond every null "
        f"({', '.join(v.nulls)}) at {floors}, at a false discovery rate of {rep.cfg.fdr:g}): {parts}."
    )
    if not calibrated:
        text += (
            " How many real features the unreplicated ones hide was not estimated (`python analyze.py "
            "analysis.calibrate=true` estimates it): unreplicated is not shown to be not real."
        )
    split = {r["dict_size"]: r for r in split_rows(v, rep.cfg) if r["seed"] == counts[0]["seed"]}
    j = rep.res.featured if rep.res.featured in split else next(iter(split), None)
    if j is not None:
        r = split[j]
        text += (
            f" At J={j} the note's split (MCS >= {rep.cfg.threshold} against J={rep.res.reference}) and the verdicts "
            f"agree on {pct(r['agreement'])} of features; {r['high_not_real']} are high-MCS but not found in another "
            f"seed, {r['real_not_high']} are found in another seed but low-MCS."
        )
    return text


def _meets(lo: float, hi: float, target: float) -> str:
    if lo >= target:
        return f"above {target:g} (its interval's lower end)"
    return f"below {target:g} (its whole interval)" if hi < target else f"not distinguishable from {target:g}"


def truth(rep: ReportInput) -> str | None:
    """On synthetic data: precision and recall of ``real`` per size, precision held against 0.95."""
    run = rep.run
    rows = run.measured(_truth)[0] if run.true_features is not None else []
    rows = [r for r in rows if r["called_real"]]
    if not rows:
        return None
    parts = "; ".join(
        f"J={r['dict_size']}: precision {pct(r['precision'])} [{pct(r['precision_lo'])}, {pct(r['precision_hi'])}] "
        f"({_meets(r['precision_lo'], r['precision_hi'], 0.95)}), recall {pct(r['recall'])}"
        for r in rows
    )
    return (
        f"Against the {int(len(run.true_features))} true features (true: MCS > {rep.cfg.recovered_cosine} against "
        f"them), the features called real, seeds pooled, {rep.cfg.level:.0%} Wilson intervals: {parts}."
    )


def row_null_rows(rep: ReportInput) -> list[dict]:
    """row_null.csv: per size, the real calls on dictionaries of random activation rows beside the learned ones'."""
    return [
        {"dict_size": r.dict_size, "floor": r.floor, "learned_live": r.learned_features, "learned_real": r.learned_real,
         "learned_share": r.learned_share, "row_features": r.row_features, "row_real": r.row_real,
         "row_share": r.row_share, "difference": r.difference, "difference_lo": r.lo, "difference_hi": r.hi}
        for r in rep.run.measured(row_null)
    ]  # fmt: skip


def rows_beaten(rep: ReportInput) -> str | None:
    """Whether ``real`` beats dictionaries of random activation rows, size by size (the difference's interval)."""
    rows = rep.run.measured(row_null)
    if not rows:
        return None
    parts = "; ".join(
        f"J={r.dict_size}: {pct(r.learned_share)} of learned live features vs {pct(r.row_share)} of rows, "
        f"difference {100 * r.difference:+.1f} points [{100 * r.lo:+.1f}, {100 * r.hi:+.1f}]"
        for r in rows
    )
    short = [r for r in rows if not r.beats]
    head = (
        f"Dictionaries of random activation rows, judged like the learned ones (as many seeds, the same nulls and "
        f"match floors), have this share of their features called real, beside the learned dictionaries' "
        f"({rep.cfg.level:.0%} interval of the difference, features counted as independent): {parts}."
    )
    if not short:
        return head + " At every size learned features are called real more often than rows (the lower end above 0)."
    below = [r.dict_size for r in short if r.hi < 0]
    same = [r.dict_size for r in short if r.hi >= 0]
    says = []
    if below:
        says.append(f"rows are called real more often than learned features at J={', '.join(map(str, below))}")
    if same:
        says.append(f"the two shares are not told apart at J={', '.join(map(str, same))}")
    return (
        f"{head} `real` does not beat random activation rows where {' and '.join(says)}: there a real call shows "
        "that a direction recurs across seeds, which random activation rows do as often, not that it is more than a "
        "typical activation."
    )


def _text(rep: ReportInput) -> str:
    v, cfg = _verdicts(rep), rep.cfg
    return (
        "Every feature of every dictionary against every other dictionary of the same variant: its best match (cosine, "
        "index; the first other seed's in `match_*`, the best anywhere in `best_*`) and the p-value of its match under "
        f"nulls fitted for that reference ({v.why}; `null`: the one that set it). `p`: being found again in at least "
        f"{cfg.min_replications} other seed(s) (partial conjunction), `q`: Benjamini-Hochberg over the dictionary's "
        f"features. Verdict: `dead` (never fired held out), `no_reference` (no other seed), `real` (q <= {cfg.fdr:g}), "
        "else `unreplicated`; `stability`: the share of the other seeds' dictionaries, every size, that find it at "
        "that level. `features.csv` holds a row per feature (the main run's, then the synthetic control's); "
        "`python analyze.py analysis.only=<name>` prints one dictionary's, `<name>:<index>` one feature's."
    )


SECTION = Section(
    heading="Which features are real",
    text=_text,
    plot=Plot("fig21", "fig21_verdicts.png", fig_verdicts),
    tables=(
        Table("verdicts per dictionary", "verdicts.csv", count_rows),
        Table("the note's split beside the verdicts", "verdict_split.csv", _split),
        Table("against the truth, per size", "verdict_truth.csv", lambda rep: _truth_of(rep)[0], optional=True),
        Table(
            "against the truth, per training budget",
            "verdict_truth_budget.csv",
            lambda rep: _truth_of(rep)[1],
            optional=True,
        ),
        Table("real calls on random activation rows", "row_null.csv", row_null_rows, optional=True),
        Table("every feature", "features.csv", feature_rows, markdown=False),
    ),
    findings=(per_size, truth, rows_beaten),
)
