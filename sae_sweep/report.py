"""Tables (CSV, Markdown) and figures (matplotlib) from analysis Results: pure functions from arrays to files.

Figure file names follow the note's numbering (fig03 ... fig12), so report.md can map each figure of the note to ours.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sae_sweep.analysis import Results, correlations, counts, pair_table  # noqa: E402
from sae_sweep.beyond import Extras, first_seed_rows  # noqa: E402
from sae_sweep.similarity import analytic_null_pdf  # noqa: E402

LEARNED, RANDOM, NULL = "tab:blue", "tab:orange", "black"


# ------------------------------------------------------------------------------------------- tables


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict], floats: str = "{:.4g}") -> str:
    if not rows:
        return "_(none)_\n"
    cols = list(rows[0])
    fmt = lambda v: floats.format(v) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def emd_rows(names: list[str], matrix: np.ndarray) -> list[dict]:
    return [{"": a, **{b: float(matrix[i, k]) for k, b in enumerate(names)}} for i, a in enumerate(names)]


def null_rows(res: Results) -> list[dict]:
    return [
        {"K": res.d_in, "M": M, "mean_max": res.null_mean[M], "q999": res.null_q999[M]} for M in sorted(res.null_mean)
    ]


# ------------------------------------------------------------------------------------------ figures


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _null_curve(ax, res: Results, M: int, lo: float, hi: float, n_features: int, bin_width: float) -> None:
    """The exact null density, scaled to expected counts per bin so it sits on a count histogram."""
    x = np.linspace(lo, hi, 400)
    ax.plot(
        x,
        analytic_null_pdf(x, res.d_in, M) * n_features * bin_width,
        color=NULL,
        lw=1.2,
        label=f"analytic null (K={res.d_in}, M={M})",
    )


def fig_hist_full(res: Results, seed: int, path: Path) -> Path:
    """Figure 3: MCS of the featured size against the reference, full range: the two modes."""
    v = res.vs_reference(res.featured, seed)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    edges = np.linspace(min(0.0, v.min()), 1.0, res.config.bins + 1)
    ax.hist(v, bins=edges, color=LEARNED, label=f"learned J={res.featured} vs J={res.reference}")
    _null_curve(ax, res, res.reference, edges[0], 1.0, v.size, edges[1] - edges[0])
    ax.axvline(res.config.threshold, color="gray", ls="--", lw=0.8)
    ax.set(
        xlabel="max cosine similarity (MCS)",
        ylabel="features",
        title=f"Fig. 3: MCS of {res.featured} features against the {res.reference}-feature dictionary",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def _low_hist(ax, res: Results, j: int, seed: int) -> None:
    cut = res.config.cutoff
    learned = res.vs_reference(j, seed)
    rand = res.random[j][0]
    lo = min(learned.min(), rand.min())
    edges = np.linspace(lo, cut, res.config.bins // 2 + 1)
    ax.hist(learned[learned < cut], bins=edges, color=LEARNED, alpha=0.7, label="learned")
    ax.hist(rand[rand < cut], bins=edges, color=RANDOM, alpha=0.5, label="random N(0,1)")
    _null_curve(ax, res, res.reference, lo, cut, j, edges[1] - edges[0])
    ax.set(title=f"J={j} vs J={res.reference} (MCS < {cut})", xlabel="MCS", ylabel="features")


def fig_low_vs_random(res: Results, seed: int, path: Path) -> Path:
    """Figure 4: the low-MCS part of the featured size against a random pair of the same shapes."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    _low_hist(ax, res, res.featured, seed)
    ax.set_title(f"Fig. 4: MCS < {res.config.cutoff}, learned vs random (J={res.featured} vs {res.reference})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _grid(n: int):
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
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
    return _save(fig, path)


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
    plt.colorbar(im, ax=ax, fraction=0.046)


def _drop(names: list[str], matrix: np.ndarray, name: str) -> tuple[list[str], np.ndarray]:
    keep = [i for i, n in enumerate(names) if n != name]
    return [names[i] for i in keep], matrix[np.ix_(keep, keep)]


def fig_emd(res: Results, j: int, path: Path, with_alt: bool, number: int) -> Path:
    """Figures 6 and 7: EMD between learned and random low-MCS distributions (7 adds the 2M 'alt params' null)."""
    names, matrix = res.emd[j] if with_alt else _drop(*res.emd[j], "alt params")
    fig, ax = plt.subplots(figsize=(6, 5))
    _heatmap(ax, names, matrix, f"Fig. {number}: EMD of MCS < {res.config.cutoff}, J={j} vs J={res.reference}")
    return _save(fig, path)


def fig_emd_grid(res: Results, path: Path) -> Path:
    """Figure 8: the EMD matrix for every size below the reference."""
    sizes = sorted(res.emd)
    fig, axes = _grid(len(sizes))
    for ax, j in zip(axes, sizes, strict=False):
        _heatmap(ax, *res.emd[j], f"J={j} vs {res.reference}")
    fig.suptitle("Fig. 8: EMD matrices by dictionary size")
    return _save(fig, path)


def fig_scatter(row: dict, path: Path, number: int) -> Path:
    """Figures 9 and 10: each feature's MCS against two larger dictionaries."""
    fig, ax = plt.subplots(figsize=(5, 5))
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
    return _save(fig, path)


def fig_counts(rows: list[dict], path: Path, proportions: bool, threshold: float) -> Path:
    """Figures 11 and 12: number (or proportion) of high- and low-MCS features per dictionary size."""
    sizes = [r["dict_size"] for r in rows]
    x = np.arange(len(sizes))
    key_hi, key_lo = ("high_fraction", "low_fraction") if proportions else ("high", "low")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.bar(x - 0.2, [r[key_hi] for r in rows], 0.4, color=LEARNED, label=f"high MCS (>= {threshold})")
    ax.bar(x + 0.2, [r[key_lo] for r in rows], 0.4, color=RANDOM, label=f"low MCS (< {threshold})")
    ax.set_xticks(x, [str(s) for s in sizes])
    what = "Proportion" if proportions else "Number"
    ax.set(
        xlabel="dictionary size",
        ylabel=what.lower() + " of features",
        title=f"Fig. {12 if proportions else 11}: {what} of high- and low-MCS features",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- report


NOTE_FIGURES = {
    3: "MCS of the 1024-feature dictionary against the 8192 one is bimodal (peaks near 0.3 and 1).",
    4: "Below MCS 0.5, learned and random distributions look alike.",
    5: "The same holds across dictionary sizes.",
    6: "EMD between learned and four random low-MCS sets: all within a factor of 2.",
    7: "An 'alt params' null (against 2M features) is far from all of them.",
    8: "Figure 7 for every size.",
    9: "A feature's MCS against two larger dictionaries is highly correlated (clusters near (0.3, 0.3) and (1, 1)).",
    10: "The same for a smaller dictionary.",
    11: "The number of high-MCS features grows with dictionary size, the number of low-MCS ones faster.",
    12: "So the high-MCS proportion falls: > 90% at 256, < 25% at 4096 in the note.",
}


def _scatter_rows(res: Results, corr: list[dict], seed: int) -> list[dict]:
    """Figure 9: the featured size (the note: 1024 against 2048 and 4096); Figure 10: the next smaller one."""
    rows = {r["dict_size"]: r for r in corr if r["seed"] == seed}
    first = res.featured if res.featured in rows else max(rows, default=None)
    if first is None:
        return []
    smaller = [j for j in rows if j < first]
    return [rows[first]] + ([rows[max(smaller)]] if smaller else [])


def write_all(
    res: Results,
    out: Path,
    extras: Extras | None = None,
    control_table: list[dict] | None = None,
    synthetic: tuple[str, Results, Extras] | None = None,
    label: str = "main run",
) -> dict[str, Path]:
    """Every table and figure, and report.md linking them; returns {name: path} of the figures.

    With ``extras`` (beyond.compute_extras of the same run) the report also has issue 6's sections and Findings;
    ``synthetic`` = (variant, Results, Extras) of a synthetic-data control whose ground truth and findings to add.
    """
    out.mkdir(parents=True, exist_ok=True)
    seed = res.seeds[0]
    figs: dict[str, Path] = {}
    tables: dict[str, str] = {}
    write_csv(out / "analytic_null.csv", null_rows(res))
    tables["analytic null"] = markdown_table(null_rows(res))
    if res.emd:
        figs["fig03"] = fig_hist_full(res, seed, out / "fig03_mcs_hist.png")
        figs["fig04"] = fig_low_vs_random(res, seed, out / "fig04_low_mcs_vs_random.png")
        figs["fig05"] = fig_low_by_size(res, seed, out / "fig05_low_mcs_by_size.png")
        figs["fig06"] = fig_emd(res, res.featured, out / "fig06_emd.png", with_alt=False, number=6)
        figs["fig07"] = fig_emd(res, res.featured, out / "fig07_emd_alt.png", with_alt=True, number=7)
        figs["fig08"] = fig_emd_grid(res, out / "fig08_emd_by_size.png")
        for j, (names, matrix) in sorted(res.emd.items()):
            write_csv(out / f"emd_J{j}.csv", emd_rows(names, matrix))
            tables[f"EMD J={j}"] = markdown_table(emd_rows(names, matrix))
        corr = [r for s in res.seeds for r in correlations(res, s)]
        for number, row in zip((9, 10), _scatter_rows(res, corr, seed), strict=False):
            figs[f"fig{number:02d}"] = fig_scatter(
                row, out / f"fig{number:02d}_scatter_J{row['dict_size']}.png", number
            )
        corr_rows = [{k: v for k, v in r.items() if k not in ("x", "y")} for r in corr]
        write_csv(out / "correlations.csv", corr_rows)
        tables["correlations"] = markdown_table(corr_rows)
        count_rows = [r for s in res.seeds for r in counts(res, s)]
        write_csv(out / "counts.csv", count_rows)
        tables["counts"] = markdown_table(count_rows)
        first = [r for r in count_rows if r["seed"] == seed]
        figs["fig11"] = fig_counts(first, out / "fig11_counts.png", proportions=False, threshold=res.config.threshold)
        figs["fig12"] = fig_counts(
            first, out / "fig12_proportions.png", proportions=True, threshold=res.config.threshold
        )
        pairs = pair_table(res)
        write_csv(out / "mcs_pairs.csv", pairs)
        tables["pairs"] = markdown_table(pairs)
        np.savez_compressed(
            out / "mcs.npz", **{f"J{a}s{sa}_vs_J{b}s{sb}": v for (a, sa, b, sb), (v, _) in res.mcs.items()}
        )
    findings_md = beyond_md = ""
    if extras is not None:
        from sae_sweep.findings import findings  # noqa: PLC0415

        syn_ex = synthetic[2] if synthetic else None
        more_figs, more_tables = write_beyond(res, extras, control_table or [], out, syn_ex)
        figs.update(more_figs)
        found = {label: findings(res, extras, control_table)}
        if synthetic is not None:
            found[f"synthetic data (variant {synthetic[0]!r})"] = findings(synthetic[1], synthetic[2])
        beyond_md = beyond_markdown(more_figs, more_tables, extras.notes + (synthetic[2].notes if synthetic else []))
        findings_md = findings_markdown(found)
        (out / "findings.md").write_text(findings_md)
    (out / "report.md").write_text(report_markdown(res, figs, tables, findings_md, beyond_md))
    return figs


def findings_markdown(found: dict[str, list[str]]) -> str:
    md = io.StringIO()
    md.write(
        "## Findings\n\n_Generated from this report's numbers by `sae_sweep/findings.py`: no hand-written claims._\n\n"
    )
    for label, items in found.items():
        md.write(f"### {label}\n\n")
        md.write("".join(f"- {item}\n" for item in items) if items else "_(not enough dictionaries for findings)_\n")
        md.write("\n")
    return md.getvalue()


def report_markdown(
    res: Results, figs: dict[str, Path], tables: dict[str, str], findings_md: str = "", beyond_md: str = ""
) -> str:
    """report.md: the intro, Findings, the note's figures, issue 6's sections, then the note's tables."""
    cfg = res.config
    md = io.StringIO()
    md.write("# sae-sweep analysis report\n\n")
    md.write(
        f"Dictionaries: layer {cfg.layer}, d_in = {res.d_in}, sizes {res.sizes}, seeds {res.seeds}. Every smaller "
        f"dictionary is scored against the J={res.reference} one (MCS: each feature's maximum cosine similarity). "
        f"Random baselines: {cfg.n_random} pairs of N(0,1) dictionaries of the same shapes, an 'alt params' pair "
        f"against 2 x {res.reference}, and the exact analytic null ((c+1)/2 ~ Beta((K-1)/2, (K-1)/2), max of M). "
        f"EMDs use MCS < {cfg.cutoff}; high-MCS means MCS >= {cfg.threshold}. Figures use seed {res.seeds[0]}.\n\n"
    )
    for w in res.warnings:
        md.write(f"> **Note:** {w}\n\n")
    md.write(findings_md)
    md.write("## The note's figures, reproduced\n\n| note | what it showed | ours |\n|---|---|---|\n")
    for number, claim in NOTE_FIGURES.items():
        key = f"fig{number:02d}"
        needs = "three or more sizes" if number in (9, 10) else "two or more sizes"
        ours = f"[{figs[key].name}]({figs[key].name})" if key in figs else f"skipped (needs {needs})"
        md.write(f"| Figure {number} | {claim} | {ours} |\n")
    md.write("\n")
    for key, path in figs.items():
        if int(key[3:]) <= 12:
            md.write(f"### {key.replace('fig', 'Figure ').replace('Figure 0', 'Figure ')}\n\n![{key}]({path.name})\n\n")
    md.write(beyond_md)
    md.write("## Tables\n\n")
    files = {
        "analytic null": "analytic_null.csv",
        "counts": "counts.csv",
        "correlations": "correlations.csv",
        "pairs": "mcs_pairs.csv",
    }
    for name, table in tables.items():
        csv_name = files.get(name) or f"emd_J{name.split('=')[1]}.csv"
        md.write(f"### {name} ([{csv_name}]({csv_name}))\n\n{table}\n")
    return md.getvalue()


# ------------------------------------------------------------------------------------------ beyond the note


def _featured_table(ex: Extras, res: Results):
    key = (res.featured, res.seeds[0])
    return ex.features.get(key) or (next(iter(ex.features.values())) if ex.features else None)


def fig_liveness(res: Results, ex: Extras, path: Path) -> Path | None:
    """Figure 13: MCS against log firing frequency (dead features on the left edge), coloured by encoder-decoder cos."""
    t = _featured_table(ex, res)
    if t is None:
        return None
    dead = t.firing == 0
    floor = np.log10(t.firing[~dead].min()) - 0.5 if (~dead).any() else -6.0
    x = np.where(dead, floor, np.log10(np.where(dead, 1.0, t.firing)))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    sc = ax.scatter(x, t.mcs, c=t.enc_dec_cos, s=5, cmap="viridis", vmin=-1, vmax=1, linewidths=0)
    plt.colorbar(sc, ax=ax, label="encoder-decoder cosine")
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
    return _save(fig, path)


def fig_movement(res: Results, ex: Extras, path: Path) -> Path | None:
    """Figure 14: MCS against each feature's cosine with its own decoder direction at initialisation."""
    t = _featured_table(ex, res)
    if t is None:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(t.init_cos, t.mcs, s=5, alpha=0.5, color=LEARNED, linewidths=0)
    ax.axvline(res.config.stay_cosine, color="gray", lw=0.8, ls=":", label=f"stayed (cos >= {res.config.stay_cosine})")
    ax.axhline(res.config.threshold, color="gray", lw=0.8, ls="--")
    ax.set(
        xlabel="cosine with own initial direction",
        ylabel=f"MCS vs J={res.reference}",
        title=f"Fig. 14: movement from initialisation, J={res.featured}",
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def fig_split(res: Results, ex: Extras, path: Path) -> Path | None:
    """Figure 15: the two-component fit (exact null + learned Beta) over the featured size's MCS histogram."""
    from scipy import stats  # noqa: PLC0415

    key = (res.featured, res.seeds[0])
    fit = ex.fits.get(key)
    v = res.vs_reference(*key)
    if fit is None or v is None:
        return None
    edges = np.linspace(0.0, 1.0, res.config.bins + 1)
    width = edges[1] - edges[0]
    x = np.linspace(0.005, 0.995, 400)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.hist(v, bins=edges, color=LEARNED, alpha=0.6, label=f"J={res.featured} vs {res.reference}")
    ax.plot(
        x,
        fit.null_weight * analytic_null_pdf(x, res.d_in, res.reference) * v.size * width,
        color=NULL,
        label=f"null component ({fit.null_weight * v.size:.0f})",
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
    return _save(fig, path)


def fig_anisotropic(res: Results, ex: Extras, path: Path) -> Path | None:
    """Figure 16: the learned MCS distribution beside isotropic and anisotropic random dictionaries."""
    if not ex.anisotropic_samples:
        return None
    j = res.featured if res.featured in ex.anisotropic_samples else min(ex.anisotropic_samples)
    samples = ex.anisotropic_samples[j]
    edges = np.linspace(min(0.0, *(v.min() for v in samples.values())), 1.0, res.config.bins + 1)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (name, v), color in zip(samples.items(), (LEARNED, RANDOM, "tab:green", "tab:purple"), strict=False):
        ax.hist(v, bins=edges, histtype="step", lw=1.4, color=color, label=name.replace("_", " "))
    ax.set(xlabel="MCS", ylabel="features", title=f"Fig. 16: learned vs random nulls, J={j} vs {res.reference}")
    ax.legend(fontsize=7)
    return _save(fig, path)


def fig_controls(table: list[dict], path: Path) -> Path | None:
    """Figure 17: high-MCS fraction and estimated real features per size, one line per variant."""
    variants = sorted({r["variant"] for r in table})
    if len(variants) < 2:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
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
    return _save(fig, path)


def fig_ground_truth(ex: Extras, path: Path) -> Path | None:
    """Figure 18: synthetic data: true features recovered and low-MCS fraction per size, true count marked."""
    rows = first_seed_rows(ex.ground_truth)
    if not rows:
        return None
    sizes = [r["dict_size"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4))
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
    ax.set(xlabel="dictionary size", ylabel="fraction", ylim=(-0.02, 1.02), title="Fig. 18: known ground truth")
    ax.legend(fontsize=7)
    return _save(fig, path)


BEYOND_SECTIONS = (
    # (heading, explanation, figure key, [(table name, csv)])
    (
        "Liveness against MCS",
        "Each feature's held-out firing frequency and encoder-decoder cosine beside its MCS; "
        "`low_dead_fraction`: low-MCS features that never fire; `low_live_null_fraction`: fire but score below the "
        "null quantile; `high_fraction_live_ref`: the high-MCS fraction against the reference's live features only.",
        "fig13",
        [("liveness", "liveness.csv")],
    ),
    (
        "Movement from initialisation",
        "Cosine of each decoder column with its own direction at initialisation "
        "(`decoder_init` is kept in every dictionary).",
        "fig14",
        [("movement", "movement.csv")],
    ),
    (
        "Matching beyond max",
        "Plain max (MMCS) beside Hungarian one-to-one matching against the reference, and "
        "the fraction of features shared across seeds at the same size (Hungarian cosine >= analysis.shared_cosine, as "
        "in Paulo & Belrose 2025).",
        None,
        [("matching", "matching.csv"), ("shared across seeds", "shared_seeds.csv")],
    ),
    (
        "A principled split",
        "High-MCS at the exact null's quantile for the pair's (K, M) beside the fixed threshold, "
        "with bootstrap intervals; `mixture_n_real`: real features estimated by a two-component fit (exact null + a "
        "learned Beta).",
        "fig15",
        [("split", "split.csv")],
    ),
    (
        "Error bars",
        "Bootstrap intervals (features resampled) for every EMD, and the seed-to-seed spread of every "
        "per-seed metric (needs two or more seeds).",
        None,
        [("EMD intervals", "emd_ci.csv"), ("seed spread", "seed_spread.csv")],
    ),
    (
        "Anisotropic nulls",
        "Random dictionaries drawn from N(0, S), S the activations' covariance, and dictionaries "
        "of random activation rows, beside the isotropic N(0, I) null.",
        "fig16",
        [("anisotropic nulls", "anisotropic.csv")],
    ),
    (
        "Controls",
        "The same analysis on the other variants of the sweep, each against its own largest dictionary: "
        "an untrained GPT, dead-feature resampling, a smaller l1_coeff, synthetic data.",
        "fig17",
        [("controls", "controls.csv")],
    ),
    (
        "Known ground truth",
        "Synthetic activations built from known unit features: each dictionary against the true features.",
        "fig18",
        [("ground truth", "ground_truth.csv")],
    ),
)


def write_beyond(res: Results, ex: Extras, control_table: list[dict], out: Path, synthetic: Extras | None = None):
    """Figures 13-18 and the tables of issue 6; returns (figures {key: path}, tables {name: (csv, markdown)})."""
    truth = synthetic if synthetic is not None else ex
    figs = {
        "fig13": fig_liveness(res, ex, out / "fig13_mcs_vs_firing.png"),
        "fig14": fig_movement(res, ex, out / "fig14_mcs_vs_init.png"),
        "fig15": fig_split(res, ex, out / "fig15_split.png"),
        "fig16": fig_anisotropic(res, ex, out / "fig16_anisotropic_nulls.png"),
        "fig17": fig_controls(control_table, out / "fig17_controls.png"),
        "fig18": fig_ground_truth(truth, out / "fig18_ground_truth.png"),
    }
    data = {
        "liveness.csv": ex.liveness,
        "movement.csv": ex.movement,
        "matching.csv": ex.matching,
        "shared_seeds.csv": ex.shared,
        "split.csv": ex.split,
        "emd_ci.csv": ex.emd_ci,
        "seed_spread.csv": ex.spread,
        "anisotropic.csv": ex.anisotropic,
        "controls.csv": control_table,
        "ground_truth.csv": truth.ground_truth,
    }
    tables = {}
    for name, rows in data.items():
        write_csv(out / name, rows)
        tables[name] = markdown_table(rows)
    return {k: p for k, p in figs.items() if p is not None}, tables


def beyond_markdown(figs: dict[str, Path], tables: dict[str, str], notes: list[str]) -> str:
    md = io.StringIO()
    md.write("## Beyond the note\n\n")
    for note in notes:
        md.write(f"> **Note:** {note}\n\n")
    for heading, text, fig, parts in BEYOND_SECTIONS:
        md.write(f"### {heading}\n\n{text}\n\n")
        if fig and fig in figs:
            md.write(f"![{fig}]({figs[fig].name})\n\n")
        for name, csv_name in parts:
            table = tables.get(csv_name) or markdown_table([])
            md.write(f"#### {name} ([{csv_name}]({csv_name}))\n\n{table}\n")
    return md.getvalue()
