"""Section "Movement from initialisation": did low-MCS features ever leave their initial direction? Figure 14,
movement.csv and its Finding."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from sae_sweep.analysis.report.plots import LEARNED, save
from sae_sweep.analysis.report.section import Plot, ReportInput, Section, Table, pct
from sae_sweep.analysis.report.tables import row_of


def fig_movement(rep: ReportInput, path: Path) -> Path | None:
    """Figure 14: MCS against each feature's cosine with its own decoder direction at initialisation."""
    res = rep.res
    t = rep.ex.featured(res)
    if t is None or t.init_cos is None:
        return None
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    ax.scatter(t.init_cos, t.mcs, s=5, alpha=0.5, color=LEARNED, linewidths=0)
    ax.axvline(res.config.stay_cosine, color="gray", lw=0.8, ls=":", label=f"stayed (cos >= {res.config.stay_cosine})")
    ax.axhline(res.config.threshold, color="gray", lw=0.8, ls="--")
    ax.set(
        xlabel="cosine with own initial direction",
        ylabel=f"MCS vs J={res.reference}",
        title=f"Fig. 14: movement from initialisation, J={res.featured}",
    )
    ax.legend(fontsize=7)
    return save(fig, path)


def movement(rep: ReportInput) -> str | None:
    res = rep.res
    r = row_of(rep.ex.movement, dict_size=res.featured, seed=res.seeds[0])
    if r is None or not r["n_low"]:
        return None
    return (
        f"{r['low_stayed']} of {r['n_low']} low-MCS features at J={res.featured} ({pct(r['low_stayed_fraction'])}) "
        f"never left their initial direction (decoder cosine >= {res.config.stay_cosine} with it), against "
        f"{pct(r['high_stayed_fraction'])} of high-MCS features."
    )


SECTION = Section(
    heading="Movement from initialisation",
    text="Cosine of each decoder column with its own direction at initialisation "
    "(`decoder_init` is kept in every dictionary).",
    plot=Plot("fig14", "fig14_mcs_vs_init.png", fig_movement),
    tables=(Table("movement", "movement.csv", lambda rep: rep.ex.movement),),
    findings=(movement,),
)
