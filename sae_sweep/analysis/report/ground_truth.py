"""Section "Known ground truth": synthetic activations built from known unit features, each dictionary against them.
Figure 18, ground_truth.csv and its Finding. The rows are the main run's when it is on synthetic data, else those of
the synthetic-data control."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from sae_sweep.analysis.report.plots import save
from sae_sweep.analysis.report.section import Plot, ReportInput, Section, Table, pct
from sae_sweep.analysis.report.tables import first_seed_rows

LOW_MODE_APPEARS = 0.10  # the low-MCS mode "appears" when at least this fraction of a dictionary is low-MCS


def _truth_rows(rep: ReportInput) -> list[dict]:
    return (rep.synthetic.measures if rep.synthetic is not None else rep.ex).ground_truth


def fig_ground_truth(rep: ReportInput, path: Path) -> Path | None:
    """Figure 18: synthetic data: true features recovered and low-MCS fraction per size, true count marked."""
    rows = first_seed_rows(_truth_rows(rep))
    if not rows:
        return None
    sizes = [r["dict_size"] for r in rows]
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    ax.plot(
        sizes,
        [r["recovered_fraction"] for r in rows],
        marker="o",
        label=f"true features recovered (MCS > {rows[0]['cosine']})",
    )
    ax.plot(sizes, [r["matched_fraction"] for r in rows], marker="s", label="dictionary features that are true ones")
    ax.plot(sizes, [r["low_vs_truth_fraction"] for r in rows], marker="v", label="low-MCS fraction (vs the truth)")
    low = [(r["dict_size"], r["low_fraction"]) for r in rows if r["low_fraction"] is not None]
    if low:
        ax.plot(*zip(*low, strict=True), marker="^", label="low-MCS fraction (vs the largest dictionary)")
    ax.axvline(rows[0]["n_true"], color="gray", ls="--", lw=0.8, label=f"true count {rows[0]['n_true']}")
    ax.set_xscale("log", base=2)
    unconverged = [str(r["dict_size"]) for r in rows if r.get("converged") is False]
    xlabel = "dictionary size" + (f" (did not converge: J={', '.join(unconverged)})" if unconverged else "")
    ax.set(xlabel=xlabel, ylabel="fraction", ylim=(-0.02, 1.02), title="Fig. 18: known ground truth")
    ax.legend(fontsize=7)
    return save(fig, path)


def _where_low(rows: list[dict], key: str, n_true: int) -> str:
    """The sizes at which the low-MCS mode holds >= LOW_MODE_APPEARS of a dictionary, in multiples of the true
    count: a description of where it is seen, with no claim about why."""
    seen = [r["dict_size"] for r in rows if r[key] is not None and r[key] >= LOW_MODE_APPEARS]
    if not seen:
        return f"holds under {pct(LOW_MODE_APPEARS)} of every dictionary"
    sizes = ", ".join(f"J={j} ({j / n_true:g}x the true count)" for j in seen)
    return f"holds {pct(LOW_MODE_APPEARS)} or more of the dictionary at {sizes}"


def ground_truth(rep: ReportInput) -> str | None:
    """Recovery of the true features and where the low-MCS mode is seen, by size: descriptions side by side."""
    if not rep.ex.ground_truth:
        return None
    rows = first_seed_rows(rep.ex.ground_truth)
    n_true, cos = rows[0]["n_true"], rows[0]["cosine"]
    recovered = ", ".join(f"J={r['dict_size']}: {pct(r['recovered_fraction'])}" for r in rows)
    truth = ", ".join(f"J={r['dict_size']}: {pct(r['low_vs_truth_fraction'])}" for r in rows)
    text = (
        f"Synthetic data with {n_true} true features. True features recovered at MCS > {cos}: {recovered}. "
        f"Scored against the true features, the low-MCS mode {_where_low(rows, 'low_vs_truth_fraction', n_true)} "
        f"(dictionary features below {rows[0]['threshold']}: {truth})"
    )
    low = [r for r in rows if r["low_fraction"] is not None]
    if low:
        where = _where_low(low, "low_fraction", n_true)
        text += f"; scored against the largest dictionary, as the note does, it {where}"
    return text + "."


SECTION = Section(
    heading="Known ground truth",
    text="Synthetic activations built from known unit features: each dictionary against the true features.",
    plot=Plot("fig18", "fig18_ground_truth.png", fig_ground_truth),
    tables=(Table("ground truth", "ground_truth.csv", _truth_rows),),
    findings=(ground_truth,),
)
