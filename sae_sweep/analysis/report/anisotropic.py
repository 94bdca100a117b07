"""Section "Anisotropic nulls": the learned MCS distribution beside random dictionaries that share the activations'
geometry. Figure 16, anisotropic.csv and its Finding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sae_sweep.analysis.report.plots import LEARNED, RANDOM, save
from sae_sweep.analysis.report.section import Plot, ReportInput, Section, Table, pct
from sae_sweep.analysis.report.tables import row_of


def fig_anisotropic(rep: ReportInput, path: Path) -> Path | None:
    """Figure 16: the learned MCS distribution beside isotropic and anisotropic random dictionaries."""
    res, ex = rep.res, rep.ex
    if not ex.anisotropic_samples:
        return None
    j = res.featured if res.featured in ex.anisotropic_samples else min(ex.anisotropic_samples)
    samples = ex.anisotropic_samples[j]
    edges = np.linspace(min(0.0, *(v.min() for v in samples.values())), 1.0, res.config.bins + 1)
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for (name, v), color in zip(samples.items(), (LEARNED, RANDOM, "tab:green", "tab:red", "tab:purple"), strict=False):
        ax.hist(v, bins=edges, histtype="step", lw=1.4, color=color, label=name.replace("_", " "))
    ax.set(xlabel="MCS", ylabel="features", title=f"Fig. 16: learned vs random nulls, J={j} vs {res.reference}")
    ax.legend(fontsize=7)
    return save(fig, path)


def anisotropy(rep: ReportInput) -> str | None:
    res, ex = rep.res, rep.ex
    r = row_of(ex.anisotropic, dict_size=res.featured) or (ex.anisotropic[0] if ex.anisotropic else None)
    if r is None:
        return None
    nulls = ("isotropic", "gaussian_cov", "gaussian_moment", "activation_rows")
    closest = min(nulls, key=lambda n: r[f"emd_full_{n}"])
    return (
        f"Against anisotropic nulls at J={r['dict_size']}: random N(0, S) dictionaries reach MCS >= "
        f"{res.config.threshold} for {pct(r['gaussian_cov_high_fraction'])} of features (S centred; with the "
        f"uncentred E[x x^T], which keeps the mean a bias-free decoder must span: "
        f"{pct(r['gaussian_moment_high_fraction'])}) and dictionaries of "
        f"activation rows for {pct(r['activation_rows_high_fraction'])} (isotropic: "
        f"{pct(r['isotropic_high_fraction'])}). The learned MCS distribution is closest (full-range EMD) to the "
        f"{closest.replace('_', ' ')} null ({r[f'emd_full_{closest}']:.4f})."
    )


SECTION = Section(
    heading="Anisotropic nulls",
    text="Random dictionaries drawn from N(0, S), S the activations' covariance, from N(0, E[x x^T]) (the "
    "uncentred second moment, which keeps the mean), and dictionaries of random activation rows, beside the "
    "isotropic N(0, I) null.",
    plot=Plot("fig16", "fig16_anisotropic_nulls.png", fig_anisotropic),
    tables=(Table("anisotropic nulls", "anisotropic.csv", lambda rep: rep.ex.anisotropic),),
    findings=(anisotropy,),
)
