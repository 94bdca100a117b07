"""The note reproduced: Figures 3-12, the tables behind them (listed at the end of report.md) and the Findings that
decide its three claims, after the one that says which dictionaries met their stopping rule.

Every verdict here is one stated test on one difference (measures/inference.py), at the level of the report's
intervals (``analysis.level``, so alpha = 1 - level):

1. "The low-MCS mode matches random vectors": the permutation test of W1 between the learned values below the
   cutoff and Rand 1's (measures/low_mode.py). Reproduced when it finds no difference (p >= alpha), which says the
   test could not tell them apart at this sample size, not that they are equal.
2. "A feature's MCS against two larger dictionaries is highly correlated": Pearson r, reproduced when the lower end
   of its Fisher interval is at least ``HIGH_CORRELATION``.
3. "The number of high-MCS features rises with size while their proportion falls": at every step between
   consecutive sizes, the score interval of the count's change lies above 0 and that of the proportion's change
   below 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sae_sweep.analysis.measures.inference import correlation_interval
from sae_sweep.analysis.measures.pairwise import Results, correlations, counts, pair_table, size_steps
from sae_sweep.analysis.report import reproduction_figures as F
from sae_sweep.analysis.report.section import ReportInput, pct
from sae_sweep.analysis.report.tables import markdown_table, write_csv

HIGH_CORRELATION = 0.7  # "highly correlated": the interval's lower end reaches this

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

Tables = dict[str, tuple[str, str]]  # csv file name -> (display name, Markdown table)


def emd_rows(names: list[str], matrix: np.ndarray) -> list[dict]:
    return [{"": a, **{b: float(matrix[i, k]) for k, b in enumerate(names)}} for i, a in enumerate(names)]


def null_rows(res: Results) -> list[dict]:
    return [
        {"K": res.d_in, "M": M, "mean_max": res.null_mean[M], "q999": res.null_q999[M]} for M in sorted(res.null_mean)
    ]


def _scatter_rows(res: Results, corr: list[dict], seed: int) -> list[dict]:
    """Figure 9: the featured size (the note: 1024 against 2048 and 4096); Figure 10: the next smaller one."""
    rows = {r["dict_size"]: r for r in corr if r["seed"] == seed}
    first = res.featured if res.featured in rows else max(rows, default=None)
    if first is None:
        return []
    smaller = [j for j in rows if j < first]
    return [rows[first]] + ([rows[max(smaller)]] if smaller else [])


def _table(out: Path, tables: Tables, csv_name: str, title: str, rows: list[dict]) -> None:
    """Write ``rows`` to ``out/csv_name`` and keep their Markdown under that file name, titled ``title``."""
    write_csv(out / csv_name, rows)
    tables[csv_name] = (title, markdown_table(rows))


def write_note(res: Results, out: Path, tables: Tables) -> dict[str, Path]:
    """Figures 3-12 and the note's tables (EMD per size, correlations, counts, pairs, mcs.npz); returns the figures."""
    seed, thr = res.seeds[0], res.config.threshold
    figs = {
        "fig03": F.fig_hist_full(res, seed, out / "fig03_mcs_hist.png"),
        "fig04": F.fig_low_vs_random(res, seed, out / "fig04_low_mcs_vs_random.png"),
        "fig05": F.fig_low_by_size(res, seed, out / "fig05_low_mcs_by_size.png"),
        "fig06": F.fig_emd(res, res.featured, out / "fig06_emd.png", with_alt=False, number=6),
        "fig07": F.fig_emd(res, res.featured, out / "fig07_emd_alt.png", with_alt=True, number=7),
        "fig08": F.fig_emd_grid(res, out / "fig08_emd_by_size.png"),
    }
    for j, (names, matrix) in sorted(res.emd.items()):
        _table(out, tables, f"emd_J{j}.csv", f"EMD J={j}", emd_rows(names, matrix))
    corr = [r for s in res.seeds for r in correlations(res, s)]
    for number, row in zip((9, 10), _scatter_rows(res, corr, seed), strict=False):
        path = out / f"fig{number:02d}_scatter_J{row['dict_size']}.png"
        figs[f"fig{number:02d}"] = F.fig_scatter(row, path, number)
    _table(
        out,
        tables,
        "correlations.csv",
        "correlations",
        [{k: v for k, v in r.items() if k not in ("x", "y")} for r in corr],
    )
    count_rows = [r for s in res.seeds for r in counts(res, s)]
    _table(out, tables, "counts.csv", "counts", count_rows)
    first = [r for r in count_rows if r["seed"] == seed]
    figs["fig11"] = F.fig_counts(first, out / "fig11_counts.png", proportions=False, threshold=thr)
    figs["fig12"] = F.fig_counts(first, out / "fig12_proportions.png", proportions=True, threshold=thr)
    _table(out, tables, "mcs_pairs.csv", "pairs", pair_table(res))
    np.savez_compressed(out / "mcs.npz", **{f"J{a}s{sa}_vs_J{b}s{sb}": v for (a, sa, b, sb), (v, _) in res.mcs.items()})
    return figs


def write(rep: ReportInput, out: Path) -> tuple[dict[str, Path], Tables]:
    """The training and analytic-null tables, then (with two sizes or more) the note's figures and tables; returns
    (figures {key: path}, tables {csv: (title, Markdown)}) for report.md."""
    res = rep.res
    tables: Tables = {}
    _table(out, tables, "training.csv", "training (did each dictionary converge?)", res.training)
    _table(out, tables, "analytic_null.csv", "analytic null", null_rows(res))
    figs = write_note(res, out, tables) if res.emd else {}
    return figs, tables


def training(rep: ReportInput) -> str | None:
    """Which dictionaries met their stopping rule: the numbers of the others describe dictionaries still learning."""
    res = rep.res
    if not res.training:
        return None
    done = [r for r in res.training if r["converged"]]
    not_done = [r for r in res.training if not r["converged"]]
    name = lambda r: f"J={r['dict_size']} s{r['seed']}"  # noqa: E731
    if not not_done:
        return f"All {len(done)} dictionaries met their stopping rule (held-out loss and decoder drift settled)."
    seen = ", ".join(f"{name(r)} ({r['activations_seen'] / 1e6:.2g}M)" for r in not_done)
    return (
        f"{len(done)} of {len(res.training)} dictionaries met their stopping rule; {len(not_done)} did not converge "
        f"within their cap ({seen} activations seen): their numbers below describe dictionaries that were still "
        "learning, and are marked * in the figures and `converged = False` in the tables."
    )


def _verdict(ok: bool) -> str:
    return "reproduced" if ok else "not reproduced"


def claim_low_mode(rep: ReportInput) -> str | None:
    res, ex = rep.res, rep.ex
    alpha, j = 1 - res.config.level, res.featured
    rows = [r for r in ex.low_tests if r["dict_size"] == j and r["null"] == "isotropic"]
    if not rows:
        return None
    parts = [
        f"{_verdict(r['p'] >= alpha)} for seed {r['seed']} (W1 {r['emd']:.4f}, p = {r['p']:.2g}, "
        f"{r['n_learned']} learned against {r['n_null']} random values)"
        for r in rows
    ]
    return (
        f"The note's claim 1, that the low-MCS mode matches random vectors (MCS < {res.config.cutoff} at J={j} "
        f"against J={res.reference}, permutation test of W1 against Rand 1, {res.config.n_perm} relabellings, "
        f"difference when p < {alpha:g}): " + "; ".join(parts) + "."
    )


def claim_correlated(rep: ReportInput) -> str | None:
    res = rep.res
    parts = []
    for s in res.seeds:
        r = next((c for c in correlations(res, s) if c["dict_size"] == res.featured), None)
        if r is None:
            continue
        sizes = (r["x_size"], r["y_size"])
        if not np.isfinite(r["pearson"]):  # one side constant: r is undefined, and so is "highly correlated"
            parts.append(f"not reproduced for seed {s} (r undefined: one of the MCS arrays is constant)")
            continue
        lo, hi = correlation_interval(r["pearson"], len(r["x"]), res.config.level)
        parts.append(f"{_verdict(lo >= HIGH_CORRELATION)} for seed {s} (r = {r['pearson']:.3f} [{lo:.3f}, {hi:.3f}])")
    if not parts:
        return None
    return (
        f"The note's claim 2, that a feature's MCS against two larger dictionaries is highly correlated (Pearson r "
        f"of J={res.featured} against J={sizes[0]} and J={sizes[1]}, {res.config.level:.0%} Fisher interval, high "
        f"when its lower end is at least {HIGH_CORRELATION}): " + "; ".join(parts) + "."
    )


def _step_failures(steps: list[dict]) -> list[str]:
    out = []
    for t in steps:
        (dc, lo, hi), (dp, plo, phi) = t["count"], t["proportion"]
        if not lo > 0:
            out.append(
                f"the count does not rise detectably from J={t['from']} to J={t['to']} "
                f"({dc:+.0f} [{lo:+.0f}, {hi:+.0f}])"
            )
        if not phi < 0:
            out.append(
                f"the proportion does not fall detectably from J={t['from']} to J={t['to']} "
                f"({100 * dp:+.1f} points [{100 * plo:+.1f}, {100 * phi:+.1f}])"
            )
    return out


def claim_counts(rep: ReportInput) -> str | None:
    res = rep.res
    parts = []
    for s in res.seeds:
        rows = counts(res, s)
        if len(rows) < 2:
            continue
        failures = _step_failures(size_steps(rows, res.config.level))
        numbers = ", ".join(f"{r['high']}" for r in rows) + " (" + ", ".join(pct(r["high_fraction"]) for r in rows)
        text = f"{_verdict(not failures)} for seed {s}: high-MCS counts {numbers})"
        parts.append(text + (": " + "; ".join(failures) if failures else ""))
    if not parts:
        return None
    sizes = ", ".join(str(r["dict_size"]) for r in counts(res, res.seeds[0]))
    return (
        f"The note's claim 3, that the number of high-MCS features rises with size while their proportion falls "
        f"(J = {sizes} against J={res.reference}; every step between consecutive sizes must show both, "
        f"{res.config.level:.0%} score intervals of the change): " + "; ".join(parts) + "."
    )
