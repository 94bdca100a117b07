"""The figures beyond the note (13-19): liveness, movement, the principled split, anisotropic nulls, controls,
ground truth and the training budget. Object API only, as figures.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sae_sweep.analysis.budget import FINAL, SAME
from sae_sweep.analysis.extras import Extras
from sae_sweep.analysis.features import first_seed_rows
from sae_sweep.analysis.figures import LEARNED, NULL, RANDOM, save
from sae_sweep.analysis.note import Results


def _featured_table(ex: Extras, res: Results):
    key = (res.featured, res.seeds[0])
    return ex.features.get(key) or (next(iter(ex.features.values())) if ex.features else None)


def fig_liveness(res: Results, ex: Extras, path: Path) -> Path | None:
    """Figure 13: MCS against log firing frequency (dead features on the left edge), coloured by encoder-decoder cos."""
    t = _featured_table(ex, res)
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


def fig_movement(res: Results, ex: Extras, path: Path) -> Path | None:
    """Figure 14: MCS against each feature's cosine with its own decoder direction at initialisation."""
    t = _featured_table(ex, res)
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


def fig_split(res: Results, ex: Extras, path: Path) -> Path | None:
    """Figure 15: the two-component fit (fitted null + learned Beta) over the featured size's MCS histogram."""
    from scipy import stats  # noqa: PLC0415

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


def fig_anisotropic(res: Results, ex: Extras, path: Path) -> Path | None:
    """Figure 16: the learned MCS distribution beside isotropic and anisotropic random dictionaries."""
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


def fig_controls(table: list[dict], path: Path) -> Path | None:
    """Figure 17: high-MCS fraction and estimated real features per size, one line per variant."""
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


def fig_ground_truth(ex: Extras, path: Path) -> Path | None:
    """Figure 18: synthetic data: true features recovered and low-MCS fraction per size, true count marked."""
    rows = first_seed_rows(ex.ground_truth)
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


def _lines(rows: list[dict], **match) -> dict[int, list[dict]]:
    """The first seed's rows matching ``match``, by dictionary size, each in budget order."""
    out: dict[int, list[dict]] = {}
    for r in first_seed_rows([r for r in rows if all(r[k] == v for k, v in match.items())]):
        out.setdefault(r["dict_size"], []).append(r)
    return {j: sorted(rs, key=lambda r: r["activations_seen"]) for j, rs in out.items()}


def fig_budget(rows: list[dict], recovery: list[dict], path: Path) -> Path | None:
    """Figure 19: measures against activations seen, first seed, one colour per size: the high-MCS fraction and the
    low mode's EMD to the null (solid: reference at the same budget; dashed: its final state), the dead and
    never-moved fractions and, on synthetic data, the true features recovered. The last point of a line is final."""
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
