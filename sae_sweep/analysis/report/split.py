"""Section "A principled split": high-MCS at the exact null's quantile beside the fixed threshold, and the real-feature
count of the two-component fit. Figure 15, split.csv and two Findings (the note's bimodality, the split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sae_sweep.analysis.measures.mixture import SCALE_BOUNDS, SHIFT_BOUNDS
from sae_sweep.analysis.report.plots import LEARNED, NULL, save
from sae_sweep.analysis.report.section import Plot, ReportInput, Section, Table, pct
from sae_sweep.analysis.report.tables import row_of


def fig_split(rep: ReportInput, path: Path) -> Path | None:
    """Figure 15: the two-component fit (fitted null + learned Beta) over the featured size's MCS histogram."""
    from scipy import stats  # noqa: PLC0415

    res, ex = rep.res, rep.ex
    key = (res.featured, res.seeds[0])
    fit = ex.fits.get(key)
    v = res.vs_reference(*key)
    if fit is None or v is None:
        return None
    edges = np.linspace(0.0, 1.0, res.config.bins + 1)
    width = edges[1] - edges[0]
    x = np.linspace(0.005, 0.995, 400)
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    ax.hist(v, bins=edges, color=LEARNED, alpha=0.6, label=f"J={res.featured} vs {res.reference}")
    ax.plot(
        x,
        fit.null_weight * np.exp(fit.null_logpdf(x)) * v.size * width,
        color=NULL,
        label=f"null component ({fit.null_weight * v.size:.0f}; shift {fit.shift:+.3f}, scale {fit.scale:.2f})",
    )
    ax.plot(
        x,
        (1 - fit.null_weight) * stats.beta.pdf(x, fit.a, fit.b) * v.size * width,
        color="tab:green",
        label=f"learned component ({fit.n_real:.0f} real)",
    )
    ax.axvline(res.config.threshold, color="gray", ls="--", lw=0.8, label=f"fixed {res.config.threshold}")
    ax.axvline(ex.null_q[res.reference], color=NULL, ls=":", lw=0.8, label=f"null {res.config.null_quantile:g} q")
    ax.set(xlabel="MCS", ylabel="features", title="Fig. 15: a principled split and a two-component fit")
    ax.legend(fontsize=7)
    return save(fig, path)


def bimodality(rep: ReportInput) -> str | None:
    res = rep.res
    j, s = res.featured, res.seeds[0]
    r = row_of(rep.ex.split, dict_size=j, seed=s)
    if r is None:
        return None
    return (
        f"At J={j}, {pct(r['high_fraction'])} of features have MCS >= {r['threshold']} against J={res.reference} "
        f"(95% CI {pct(r['high_lo'])} to {pct(r['high_hi'])}); {pct(1 - r['high_null_fraction'])} sit below "
        f"the exact null's {res.config.null_quantile:g} quantile ({r['null_quantile']:.3f}), where random vectors land."
    )


def _at_bound(r: dict) -> str:
    """A warning when the fitted null's shift or scale sits at the edge of its allowed range (mixture.py)."""
    shift, scale = r["mixture_null_shift"], r["mixture_null_scale"]
    edge = abs(abs(shift) - SHIFT_BOUNDS[1]) < 1e-4 or min(abs(scale - b) for b in SCALE_BOUNDS) < 1e-4
    return " (at the edge of its allowed range: too few null-like values there to pin the null's shape)" if edge else ""


def split(rep: ReportInput) -> str | None:
    """The real-feature count two ways (above the exact null's quantile; the two-component fit whose null may move
    and stretch), and the fit's count under the exact null beside it: how much the count depends on the null."""
    res = rep.res
    rows = [r for r in rep.ex.split if r["seed"] == res.seeds[0] and r["mixture_n_real"] is not None]
    if not rows:
        return None
    est = ", ".join(
        f"J={r['dict_size']}: {r['mixture_n_real']:.0f} ({r['mixture_n_real_exact_null']:.0f}, "
        f"{r['n_above_null_quantile']})"
        for r in rows
    )
    real = [r["mixture_n_real"] for r in rows]
    peak = rows[int(np.argmax(real))]["dict_size"]
    trend = (
        "keeps growing with the dictionary"
        if peak == rows[-1]["dict_size"]
        else f"peaks at J={peak} and does not grow with larger dictionaries"
    )
    featured = row_of(rows, dict_size=res.featured) or rows[0]
    return (
        f"With the exact null's quantile as the split, {pct(featured['high_null_fraction'])} of J="
        f"{featured['dict_size']} features are high-MCS (fixed {featured['threshold']}: "
        f"{pct(featured['high_fraction'])}). Real features per dictionary from the two-component fit, whose null "
        f"component may move and stretch (in brackets: the same fit with the exact null, and the count above its "
        f"{res.config.null_quantile:g} quantile): {est}; at J={featured['dict_size']} the fitted null moved by "
        f"{featured['mixture_null_shift']:+.3f} and scaled by {featured['mixture_null_scale']:.2f}"
        f"{_at_bound(featured)}. The estimate {trend}."
    )


SECTION = Section(
    heading="A principled split",
    text="High-MCS at the exact null's quantile for the pair's (K, M) beside the fixed threshold, "
    "with Wilson intervals; `mixture_n_real`: real features estimated by a two-component fit (a null component, "
    "the exact null moved by `mixture_null_shift` and stretched by `mixture_null_scale`, + a learned Beta), "
    "beside the same fit with the exact null (`mixture_n_real_exact_null`) and the count above the quantile.",
    plot=Plot("fig15", "fig15_split.png", fig_split),
    tables=(Table("split", "split.csv", lambda rep: rep.ex.split),),
    findings=(bimodality, split),
)
