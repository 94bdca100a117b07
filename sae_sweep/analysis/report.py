"""The report: every table (CSV and Markdown) and figure of one analysis, and report.md linking them.

``write_all`` writes the note's figures (figures.py), the figures beyond it (figures_beyond.py), a CSV and a
Markdown table for every set of rows, the training-budget section (budget.py), the generated Findings (findings.py)
and report.md into one folder.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from sae_sweep.analysis import figures as F
from sae_sweep.analysis import figures_beyond as FB
from sae_sweep.analysis.budget import write_budget
from sae_sweep.analysis.extras import AnalysedRun, Extras
from sae_sweep.analysis.note import Results, correlations, counts, pair_table


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


Tables = dict[str, tuple[str, str]]  # csv file name -> (display name, Markdown table)


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


def write_all(
    main: AnalysedRun,
    out: Path,
    control_table: list[dict] | None = None,
    synthetic: AnalysedRun | None = None,
    label: str = "main run",
    arch_table: list[dict] | None = None,
) -> dict[str, Path]:
    """Every table and figure, the Findings and report.md linking them; returns {name: path} of the figures.

    ``synthetic``: a synthetic-data control whose ground truth and Findings to add beside the main run's;
    ``arch_table``: architectures.py's rows, when other architectures than ReLU were trained.
    """
    from sae_sweep.analysis.findings import findings  # noqa: PLC0415
    from sae_sweep.analysis.report_archs import write_architectures  # noqa: PLC0415

    res, ex = main.results, main.extras
    out.mkdir(parents=True, exist_ok=True)
    tables: Tables = {}
    _table(out, tables, "training.csv", "training (did each dictionary converge?)", res.training)
    _table(out, tables, "analytic_null.csv", "analytic null", null_rows(res))
    figs = write_note(res, out, tables) if res.emd else {}
    more_figs, more_tables = write_beyond(res, ex, control_table or [], out, synthetic.extras if synthetic else None)
    budget_figs, budget_md = write_budget(res, ex.budget, synthetic.extras.budget if synthetic else None, out)
    figs.update(more_figs | budget_figs)
    arch_figs, arch_md, arch_found = write_architectures(arch_table or [], out, res.config.level)
    figs.update(arch_figs)
    found = {label: findings(res, ex, control_table) + arch_found}
    if synthetic is not None:
        found[f"synthetic data (variant {synthetic.variant!r})"] = findings(synthetic.results, synthetic.extras)
    notes = ex.notes + (synthetic.extras.notes if synthetic else [])
    findings_md = findings_markdown(found)
    (out / "findings.md").write_text(findings_md)
    beyond_md = beyond_markdown(more_figs, more_tables, notes) + arch_md + budget_md  # the budget section closes
    report = report_markdown(res, figs, tables, findings_md, beyond_md)
    (out / "report.md").write_text(report)
    return figs


def findings_markdown(found: dict[str, list[str]]) -> str:
    md = io.StringIO()
    md.write(
        "## Findings\n\n_Generated from this report's numbers by `sae_sweep/analysis/findings.py`: "
        "no hand-written claims._\n\n"
    )
    for label, items in found.items():
        md.write(f"### {label}\n\n")
        md.write("".join(f"- {item}\n" for item in items) if items else "_(not enough dictionaries for findings)_\n")
        md.write("\n")
    return md.getvalue()


def report_markdown(
    res: Results, figs: dict[str, Path], tables: Tables, findings_md: str = "", beyond_md: str = ""
) -> str:
    """report.md: the intro, Findings, the note's figures, the sections beyond it, then the note's tables."""
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
    for csv_name, (title, table) in tables.items():
        md.write(f"### {title} ([{csv_name}]({csv_name}))\n\n{table}\n")
    return md.getvalue()


# ------------------------------------------------------------------------------------------ beyond the note


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
        "with Wilson intervals; `mixture_n_real`: real features estimated by a two-component fit (a null component, "
        "the exact null moved by `mixture_null_shift` and stretched by `mixture_null_scale`, + a learned Beta), "
        "beside the same fit with the exact null (`mixture_n_real_exact_null`) and the count above the quantile.",
        "fig15",
        [("split", "split.csv")],
    ),
    (
        "Error bars",
        "Bootstrap intervals (features resampled) for every EMD; permutation tests of each low mode against the "
        "isotropic null (Rand 1) and against random vectors scored on the learned reference (`low_mode_tests.csv`: "
        "W1 and p); and the seed-to-seed spread of every per-seed metric (range from two seeds, sd from three).",
        None,
        [
            ("EMD intervals", "emd_ci.csv"),
            ("low mode against two nulls", "low_mode_tests.csv"),
            ("seed spread", "seed_spread.csv"),
        ],
    ),
    (
        "Anisotropic nulls",
        "Random dictionaries drawn from N(0, S), S the activations' covariance, from N(0, E[x x^T]) (the "
        "uncentred second moment, which keeps the mean), and dictionaries of random activation rows, beside the "
        "isotropic N(0, I) null.",
        "fig16",
        [("anisotropic nulls", "anisotropic.csv")],
    ),
    (
        "Controls",
        "The same analysis on the other variants of the sweep, each against its own largest dictionary: "
        "an untrained GPT, dead-feature resampling, a smaller l1_coeff, synthetic data. The Findings compare each "
        "with the main run's dictionary of the same size against the same reference size, on the same kind of data.",
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
    """Figures 13-18 and the tables beyond the note; returns (figures {key: path}, tables {csv: (title, markdown)})."""
    truth = synthetic if synthetic is not None else ex
    figs = {
        "fig13": FB.fig_liveness(res, ex, out / "fig13_mcs_vs_firing.png"),
        "fig14": FB.fig_movement(res, ex, out / "fig14_mcs_vs_init.png"),
        "fig15": FB.fig_split(res, ex, out / "fig15_split.png"),
        "fig16": FB.fig_anisotropic(res, ex, out / "fig16_anisotropic_nulls.png"),
        "fig17": FB.fig_controls(control_table, out / "fig17_controls.png"),
        "fig18": FB.fig_ground_truth(truth, out / "fig18_ground_truth.png"),
    }
    data = {
        "liveness.csv": ex.liveness,
        "movement.csv": ex.movement,
        "matching.csv": ex.matching,
        "shared_seeds.csv": ex.shared,
        "split.csv": ex.split,
        "emd_ci.csv": ex.emd_ci,
        "low_mode_tests.csv": ex.low_tests,
        "seed_spread.csv": ex.spread,
        "anisotropic.csv": ex.anisotropic,
        "controls.csv": control_table,
        "ground_truth.csv": truth.ground_truth,
    }
    tables: Tables = {}
    for name, rows in data.items():
        _table(out, tables, name, name, rows)
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
            table = tables[csv_name][1] if csv_name in tables else markdown_table([])
            md.write(f"#### {name} ([{csv_name}]({csv_name}))\n\n{table}\n")
    return md.getvalue()
