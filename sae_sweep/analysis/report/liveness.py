"""Section "Liveness against MCS": are low-MCS features dead? Figure 13, liveness.csv and its Finding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sae_sweep.analysis.report.plots import NULL, save
from sae_sweep.analysis.report.section import Plot, ReportInput, Section, Table, pct
from sae_sweep.analysis.report.tables import row_of


def fig_liveness(rep: ReportInput, path: Path) -> Path | None:
    """Figure 13: MCS against log firing frequency (dead features on the left edge), coloured by encoder-decoder cos."""
    res, ex = rep.res, rep.ex
    t = ex.featured(res)
    if t is None or t.firing is None:
        return None
    dead = t.firing == 0
    floor = np.log10(t.firing[~dead].min()) - 0.5 if (~dead).any() else -6.0
    x = np.where(dead, floor, np.log10(np.where(dead, 1.0, t.firing)))
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    sc = ax.scatter(x, t.mcs, c=t.enc_dec_cos, s=5, cmap="viridis", vmin=-1, vmax=1, linewidths=0)
    fig.colorbar(sc, ax=ax, label="encoder-decoder cosine")
    ax.axvline(floor + 0.25, color="gray", lw=0.6, ls=":")
    ax.axhline(res.config.threshold, color="gray", lw=0.8, ls="--")
    ax.axhline(
        ex.null_q[res.reference], color=NULL, lw=0.8, ls=":", label=f"null {res.config.null_quantile:g} quantile"
    )
    ax.set(
        xlabel="log10 held-out firing frequency (dead: left edge)",
        ylabel=f"MCS vs J={res.reference}",
        title=f"Fig. 13: liveness against MCS, J={res.featured} ({int(dead.sum())} dead)",
    )
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)


def liveness(rep: ReportInput) -> str | None:
    res = rep.res
    r = row_of(rep.ex.liveness, dict_size=res.featured, seed=res.seeds[0])
    if r is None or not r["n_low"]:
        return None
    dead, rand = r["low_dead_fraction"], r["low_live_null_fraction"]
    rest = 1 - dead - rand
    main = max((dead, "dead"), (rand, "alive but random-looking"), (rest, "alive and above the null"))[1]
    return (
        f"Of the {r['n_low']} low-MCS features at J={res.featured}, {pct(dead)} never fire on held-out "
        f"activations, {pct(rand)} fire but score below the null quantile, and {pct(rest)} fire and score above it: "
        f"most are {main}. Restricting the reference to its live features moves the high-MCS fraction from "
        f"{pct(r['high_fraction'])} to {pct(r['high_fraction_live_ref'])}."
    ) + _rarity(r)


def _rarity(r: dict) -> str:
    """How often the live low- and high-MCS features fire, and how far their encoders turned from their decoders."""
    lo, hi = r["median_log10_freq_low"], r["median_log10_freq_high"]
    if lo is None or hi is None:
        return ""
    ratio = 10 ** (hi - lo)
    how = f"{ratio:.0f} times less often than" if ratio >= 2 else "about as often as"
    text = f" The live low-MCS features fire {how} high-MCS ones (median frequency 10^{lo:.2f} vs 10^{hi:.2f})"
    if r["enc_dec_cos_low"] is not None and r["enc_dec_cos_high"] is not None:
        text += (
            f", and their encoder rows keep a median cosine of {r['enc_dec_cos_low']:.2f} with their decoder columns "
            f"(high-MCS: {r['enc_dec_cos_high']:.2f})"
        )
    return text + "."


SECTION = Section(
    heading="Liveness against MCS",
    text="Each feature's held-out firing frequency and encoder-decoder cosine beside its MCS; "
    "`low_dead_fraction`: low-MCS features that never fire; `low_live_null_fraction`: fire but score below the "
    "null quantile; `high_fraction_live_ref`: the high-MCS fraction against the reference's live features only.",
    plot=Plot("fig13", "fig13_mcs_vs_firing.png", fig_liveness),
    tables=(Table("liveness", "liveness.csv", lambda rep: rep.ex.liveness),),
    findings=(liveness,),
)
