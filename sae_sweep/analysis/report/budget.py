"""Section "Training budget": the measures as functions of how long the dictionaries trained (measures/budget.py).
Figure 19, budget.csv, budget_recovery.csv (synthetic data) and the budget's Finding; the section is left out when
no dictionary kept snapshots. A synthetic-data control's budget joins the main run's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sae_sweep.analysis.measures.budget import FINAL, SAME, Budget
from sae_sweep.analysis.report.plots import NULL, save
from sae_sweep.analysis.report.section import Plot, ReportInput, Section, Table, pct
from sae_sweep.analysis.report.tables import first_seed_rows


def _budgets(rep: ReportInput) -> list[Budget]:
    """The main run's budget axis and the synthetic control's, those that exist."""
    synthetic = rep.synthetic.measures.budget if rep.synthetic is not None else None
    return [b for b in (rep.ex.budget, synthetic) if b is not None]


def _rows(rep: ReportInput) -> list[dict]:
    return [r for b in _budgets(rep) for r in b.rows]


def _recovery(rep: ReportInput) -> list[dict]:
    return next((b.recovery for b in _budgets(rep) if b.recovery), [])


def _lines(rows: list[dict], **match) -> dict[int, list[dict]]:
    """The first seed's rows matching ``match``, by dictionary size, each in budget order."""
    out: dict[int, list[dict]] = {}
    for r in first_seed_rows([r for r in rows if all(r[k] == v for k, v in match.items())]):
        out.setdefault(r["dict_size"], []).append(r)
    return {j: sorted(rs, key=lambda r: r["activations_seen"]) for j, rs in out.items()}


def fig_budget(rep: ReportInput, path: Path) -> Path | None:
    """Figure 19: measures against activations seen, first seed, one colour per size: the high-MCS fraction and the
    low mode's EMD to the null (solid: reference at the same budget; dashed: its final state), the dead and
    never-moved fractions and, on synthetic data, the true features recovered. The last point of a line is final."""
    rows = next((b.rows for b in _budgets(rep) if b.rows), [])  # the main run's, else the synthetic control's
    recovery = _recovery(rep)
    if not rows and not recovery:
        return None
    panels = [  # (column, y label, rows, reference states drawn: solid, then dashed)
        ("high_fraction", "high-MCS fraction", rows, (SAME, FINAL)),
        ("low_emd_null", "low-mode EMD to the exact null", rows, (SAME, FINAL)),
        ("dead_fraction", "dead fraction", rows, (FINAL,)),  # these two do not depend on the reference
        ("never_moved", "never-moved fraction", rows, (FINAL,)),
    ] + ([("recovered_fraction", "true features recovered", recovery, (None,))] if recovery else [])
    n_rows = 1 + (len(panels) > 3)
    n_cols = -(-len(panels) // n_rows)
    fig = Figure(figsize=(4.2 * n_cols, 3.4 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()  # (n_rows * n_cols,)
    sizes = sorted({r["dict_size"] for r in rows + recovery})  # one colour per size across panels
    for ax, (key, ylabel, source, refs) in zip(axes, panels, strict=False):
        for ref, ls in zip(refs, ("-", "--"), strict=False):
            for j, line in _lines(source, **({} if ref is None else {"reference_state": ref})).items():
                star = "*" if line[-1].get("converged") is False else ""
                ax.plot(
                    [r["activations_seen"] for r in line],
                    [np.nan if r[key] is None else r[key] for r in line],
                    ls=ls,
                    marker="o",
                    ms=3,
                    color=f"C{sizes.index(j) % 10}",
                    label=f"J={j}{star}" if ls == "-" else None,
                )
        ax.set_xscale("log", base=2)
        ax.set(xlabel="activations seen", ylabel=ylabel)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].plot([], [], color=NULL, ls="--", label="vs reference final (solid: same budget)")
    axes[0].legend(fontsize=6)
    if recovery:
        axes[len(panels) - 1].legend(fontsize=6)
    fig.suptitle("Fig. 19: the training budget (last point of a line: final state; * did not converge)")
    return save(fig, path)


def training_budget(rep: ReportInput) -> str | None:
    """Was the featured size's high-MCS fraction still moving between its last two budgets? A paired bootstrap
    interval of the change (budget.last_step) that excludes 0 says so; one that covers 0 says none was detected."""
    t = rep.ex.budget.last_step if rep.ex.budget is not None else None
    if t is None:
        return None
    what = f"the high-MCS fraction of J={t['dict_size']} against J={t['reference']} at the same budget"
    span = f"between {t['from_seen']:,} and {t['to_seen']:,} activations seen" + (" (final)" if t["to_final"] else "")
    change = f"{100 * t['change']:+.1f} points [{100 * t['lo']:+.1f}, {100 * t['hi']:+.1f}]"
    how = f"({t['level']:.0%} paired bootstrap interval over features), from {pct(t['high_from'])} to "
    how += f"{pct(t['high_to'])}."
    if t["lo"] > 0 or t["hi"] < 0:
        direction = "rising" if t["lo"] > 0 else "falling"
        return f"Along the training budget, {what} was still {direction} {span}: by {change} {how}"
    return f"Along the training budget, no change in {what} was detected {span} at this resolution: {change} {how}"


def _text(rep: ReportInput) -> str:
    res, cfg = rep.res, rep.cfg
    return (
        "The SAE stage saves each dictionary's decoder at every doubling of the activations it has seen "
        "(`sae.snapshot_first`, then 2x, 4x, ...) before its last step; the last point of each line is the final "
        "dictionary (`final = True`). At every budget each smaller dictionary is scored against the reference "
        f"J={res.reference} at the same budget (`reference_state = {SAME}`: the reference's snapshot or final state "
        "with the same activations seen; budgets it lacks are left out) and against the reference's final state "
        f"(`{FINAL}`). Solid lines compare two dictionaries that saw the same number of activations; dashed lines "
        "compare each budget with the finished reference, as the note's numbers do. A line that is flat over its "
        "last points did not change between those budgets; one still moving there was still changing when training "
        f"stopped. `low_emd_null`: EMD of the MCS values below {cfg.cutoff} to one seeded draw of J values of "
        f"the exact null (K = d_in, M = {res.reference}) cut at the same place, the same draw at every budget. "
        "`dead_fraction`: features that fired on none of `dead_rows` held-out rows (`dead_on`): the evaluation "
        "sample (`sae.eval_rows`) at every point, the final state included, so the points count over the same rows "
        "(every held-out row only for a final state training did not snapshot). A feature that fires on 1 in 10,000 "
        "activations is dead on a 4096-row sample. "
        f"`never_moved`: decoder cosine >= {cfg.stay_cosine} with `decoder_init`. Figure 19 shows the first seed "
        "of the main run (of the synthetic control when only it has snapshots)."
    )


SECTION = Section(
    heading="Training budget",
    text=_text,
    plot=Plot("fig19", "fig19_budget.png", fig_budget),
    tables=(
        Table("budget", "budget.csv", _rows),
        Table("budget recovery", "budget_recovery.csv", _recovery, optional=True),
    ),
    findings=(training_budget,),
    shown=lambda rep: bool(_rows(rep) or _recovery(rep)),
)
