"""Section "Controls": the other variants of the sweep beside the main run. Figure 17, controls.csv and its Finding.

The Finding compares each control with the main run's dictionary of the same size scored against the same reference
size, on the same kind of data (one Newcombe score interval of the difference in high-MCS fraction each);
synthetic-data variants have their own section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sae_sweep.analysis.measures.inference import score_difference
from sae_sweep.analysis.measures.pairwise import Results
from sae_sweep.analysis.report.plots import save
from sae_sweep.analysis.report.section import Plot, ReportInput, Section, Table, pct
from sae_sweep.analysis.report.tables import first_seed_rows


def fig_controls(rep: ReportInput, path: Path) -> Path | None:
    """Figure 17: high-MCS fraction and estimated real features per size, one line per variant."""
    table = rep.controls
    variants = sorted({r["variant"] for r in table})
    if len(variants) < 2:
        return None
    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2)
    for v in variants:
        rows = first_seed_rows([r for r in table if r["variant"] == v])
        sizes = [r["dict_size"] for r in rows]
        a1.plot(sizes, [r["high_fraction"] for r in rows], marker="o", label=v)
        a2.plot(sizes, [np.nan if r["mixture_n_real"] is None else r["mixture_n_real"] for r in rows], marker="o")
    for ax, ylabel in ((a1, "high-MCS fraction (vs own reference)"), (a2, "real features (two-component fit)")):
        ax.set_xscale("log", base=2)
        ax.set(xlabel="dictionary size", ylabel=ylabel)
    a1.legend(fontsize=7)
    fig.suptitle("Fig. 17: controls side by side")
    return save(fig, path)


def _comparable(res: Results, row: dict) -> tuple[int, int] | None:
    """(high-MCS count, n) of the main run's dictionary at the control row's size and seed, scored against the
    control's reference size; None when the main run has no such pair."""
    hit = res.mcs.get((row["dict_size"], row["seed"], row["reference"], row["seed"]))
    if hit is None:
        return None
    v = hit[0]
    return int((v >= res.config.threshold).sum()), v.size


def _control_part(res: Results, r: dict, main_row: dict) -> str | None:
    mine = _comparable(res, r)
    if mine is None:
        return None
    d, lo, hi = score_difference(r["high"], r["n"], *mine, res.config.level)
    if lo > 0 or hi < 0:
        how = f"{'higher' if lo > 0 else 'lower'} by {100 * abs(d):.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    else:
        how = f"no difference detected ({100 * d:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}])"
    loss, main_loss = r.get("gpt_val_loss"), main_row.get("gpt_val_loss")
    other_gpt = loss and main_loss and loss != main_loss  # a control on another GPT says how good that GPT was
    gpt = f" (its GPT's validation loss {loss:.2f} against {main_loss:.2f})" if other_gpt else ""
    return (
        f"{r['variant']}{gpt}: {pct(r['high_fraction'])} high-MCS at J={r['dict_size']} against J={r['reference']}, "
        f"the main run {pct(mine[0] / mine[1])} at J={r['dict_size']} against J={r['reference']}: {how}"
    )


def controls(rep: ReportInput) -> str | None:
    """Each control on the main run's kind of data, against the main run at the same size and reference size."""
    res, table = rep.res, rep.controls
    j, s = res.featured, res.seeds[0]
    main_row = next((r for r in table if r["variant"] == "(note)" and r["dict_size"] == j and r["seed"] == s), None)
    if main_row is None:
        return None
    parts = []
    for v in sorted({r["variant"] for r in table if r["data"] == main_row["data"]} - {"(note)"}):
        rows = [r for r in table if r["variant"] == v and r["seed"] == s]
        if not rows:
            continue
        r = next((x for x in rows if x["dict_size"] == j), None) or max(rows, key=lambda x: x["dict_size"])
        part = _control_part(res, r, main_row)
        if part:
            parts.append(part)
    if not parts:
        return None
    return (
        f"Controls, each beside the main run's dictionary of the same size against the same reference size (seed {s}; "
        f"{res.config.level:.0%} score interval of the difference in high-MCS fraction): " + "; ".join(parts) + "."
    )


SECTION = Section(
    heading="Controls",
    text="The same analysis on the other variants of the sweep, each against its own largest dictionary: "
    "an untrained GPT, dead-feature resampling, a smaller l1_coeff, synthetic data. The Findings compare each "
    "with the main run's dictionary of the same size against the same reference size, on the same kind of data.",
    plot=Plot("fig17", "fig17_controls.png", fig_controls),
    tables=(Table("controls", "controls.csv", lambda rep: rep.controls),),
    findings=(controls,),
)
