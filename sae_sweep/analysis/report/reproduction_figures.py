"""The note's figures (3-12) from its pairwise numbers (``Results``): pure functions from arrays to PNG files.

File names follow the note's numbering (fig03 ... fig12), so report.md can map each figure of the note to ours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sae_sweep.analysis.measures.nulls import analytic_null_cdf, analytic_null_pdf
from sae_sweep.analysis.measures.pairwise import ALT, Results
from sae_sweep.analysis.report.plots import LEARNED, NULL, RANDOM, save


def null_counts(x: np.ndarray, K: int, M: int, n_low: int, cut: float, bin_width: float) -> np.ndarray:
    """Expected features per bin at ``x`` if the ``n_low`` values below ``cut`` were draws of the exact null.

    The null's density restricted to MCS < cut (divided by its mass there) times n_low: the curve overlays the low
    part of a histogram, so it is scaled to that part's count, not to the whole dictionary's.
    """
    mass = float(analytic_null_cdf(cut, K, M))
    return analytic_null_pdf(x, K, M) * n_low / max(mass, 1e-300) * bin_width


def _null_curve(ax, res: Results, M: int, lo: float, values: np.ndarray, bin_width: float) -> None:
    """The exact null, scaled to the count of ``values`` below the cutoff, drawn over [lo, cutoff]."""
    cut = res.config.cutoff
    x = np.linspace(lo, cut, 400)
    n_low = int(np.count_nonzero(values < cut))
    ax.plot(
        x,
        null_counts(x, res.d_in, M, n_low, cut, bin_width),
        color=NULL,
        lw=1.2,
        label=f"analytic null (K={res.d_in}, M={M}), scaled to the {n_low} values < {cut}",
    )


def fig_hist_full(res: Results, seed: int, path: Path) -> Path:
    """Figure 3: MCS of the featured size against the reference, full range: the two modes."""
    v = res.vs_reference(res.featured, seed)
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    edges = np.linspace(min(0.0, v.min()), 1.0, res.config.bins + 1)
    ax.hist(v, bins=edges, color=LEARNED, label=f"learned J={res.featured} vs J={res.reference}")
    _null_curve(ax, res, res.reference, edges[0], v, edges[1] - edges[0])
    ax.axvline(res.config.threshold, color="gray", ls="--", lw=0.8)
    ax.set(
        xlabel="max cosine similarity (MCS)",
        ylabel="features",
        title=f"Fig. 3: MCS of {res.featured} features against the {res.reference}-feature dictionary",
    )
    ax.legend(fontsize=8)
    return save(fig, path)


def _low_hist(ax, res: Results, j: int, seed: int) -> None:
    cut = res.config.cutoff
    learned = res.vs_reference(j, seed)
    rand = res.random[j][0]
    lo = min(learned.min(), rand.min())
    if lo >= cut:  # analysis.cutoff (or the threshold it follows) below every MCS: no bin to draw, said in the panel
        ax.text(0.5, 0.5, f"no MCS below {cut}\n(the lowest, learned or random, is {lo:.3f})", ha="center",
                va="center", transform=ax.transAxes)  # fmt: skip
        ax.set(title=f"J={j} vs J={res.reference} (MCS < {cut})", xlabel="MCS", ylabel="features")
        return
    edges = np.linspace(lo, cut, res.config.bins // 2 + 1)
    ax.hist(learned[learned < cut], bins=edges, color=LEARNED, alpha=0.7, label="learned")
    ax.hist(rand[rand < cut], bins=edges, color=RANDOM, alpha=0.5, label="random N(0,1)")
    _null_curve(ax, res, res.reference, lo, learned, edges[1] - edges[0])
    ax.set(title=f"J={j} vs J={res.reference} (MCS < {cut})", xlabel="MCS", ylabel="features")


def fig_low_vs_random(res: Results, seed: int, path: Path) -> Path:
    """Figure 4: the low-MCS part of the featured size against a random pair of the same shapes."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    _low_hist(ax, res, res.featured, seed)
    ax.set_title(f"Fig. 4: MCS < {res.config.cutoff}, learned vs random (J={res.featured} vs {res.reference})")
    ax.legend(fontsize=8)
    return save(fig, path)


def _grid(n: int):
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def fig_low_by_size(res: Results, seed: int, path: Path) -> Path:
    """Figure 5: the same comparison for every size below the reference."""
    sizes = [j for j in res.random if res.vs_reference(j, seed) is not None]
    fig, axes = _grid(len(sizes))
    for ax, j in zip(axes, sizes, strict=False):
        _low_hist(ax, res, j, seed)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Fig. 5: low-MCS features vs random, by dictionary size (seed {seed})")
    return save(fig, path)


def _heatmap(ax, names: list[str], matrix: np.ndarray, title: str) -> None:
    im = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    top = matrix.max() or 1.0
    for i in range(len(names)):
        for k in range(len(names)):
            ax.text(
                k,
                i,
                f"{matrix[i, k]:.3f}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if matrix[i, k] < 0.6 * top else "black",
            )
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(im, ax=ax, fraction=0.046)


def _drop(names: list[str], matrix: np.ndarray, name: str) -> tuple[list[str], np.ndarray]:
    keep = [i for i, n in enumerate(names) if n != name]
    return [names[i] for i in keep], matrix[np.ix_(keep, keep)]


def fig_emd(res: Results, j: int, path: Path, with_alt: bool, number: int) -> Path:
    """Figures 6 and 7: EMD between learned and random low-MCS distributions (7 adds the 2M 'alt params' null)."""
    names, matrix = res.emd[j] if with_alt else _drop(*res.emd[j], ALT)
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    _heatmap(ax, names, matrix, f"Fig. {number}: EMD of MCS < {res.config.cutoff}, J={j} vs J={res.reference}")
    return save(fig, path)


def fig_emd_grid(res: Results, path: Path) -> Path:
    """Figure 8: the EMD matrix for every size below the reference."""
    sizes = sorted(res.emd)
    fig, axes = _grid(len(sizes))
    for ax, j in zip(axes, sizes, strict=False):
        _heatmap(ax, *res.emd[j], f"J={j} vs {res.reference}")
    fig.suptitle("Fig. 8: EMD matrices by dictionary size")
    return save(fig, path)


def fig_scatter(row: dict, path: Path, number: int) -> Path:
    """Figures 9 and 10: each feature's MCS against two larger dictionaries."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(row["x"], row["y"], s=4, alpha=0.4, color=LEARNED, linewidths=0)
    ax.plot([0, 1], [0, 1], color="gray", lw=0.6, ls="--")
    ax.set(
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        xlabel=f"MCS vs J={row['x_size']}",
        ylabel=f"MCS vs J={row['y_size']}",
        title=f"Fig. {number}: J={row['dict_size']} features (Pearson r={row['pearson']:.2f}, "
        f"Spearman {row['spearman']:.2f})",
    )
    ax.title.set_fontsize(9)
    return save(fig, path)


def fig_counts(rows: list[dict], path: Path, proportions: bool, threshold: float) -> Path:
    """Figures 11 and 12: number (or proportion) of high- and low-MCS features per dictionary size."""
    sizes = [r["dict_size"] for r in rows]
    x = np.arange(len(sizes))
    key_hi, key_lo = ("high_fraction", "low_fraction") if proportions else ("high", "low")
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    ax.bar(x - 0.2, [r[key_hi] for r in rows], 0.4, color=LEARNED, label=f"high MCS (>= {threshold})")
    ax.bar(x + 0.2, [r[key_lo] for r in rows], 0.4, color=RANDOM, label=f"low MCS (< {threshold})")
    ax.set_xticks(x, [f"{r['dict_size']}{'' if r.get('converged', True) else '*'}" for r in rows])
    what = "Proportion" if proportions else "Number"
    ax.set(
        xlabel="dictionary size" + (" (* did not converge)" if any(r.get("converged") is False for r in rows) else ""),
        ylabel=what.lower() + " of features",
        title=f"Fig. {12 if proportions else 11}: {what} of high- and low-MCS features",
    )
    ax.legend(fontsize=8)
    return save(fig, path)
