"""The report folder: report.md and findings.md, with every section's figures and CSV tables beside them.

This module only orders. ``SECTIONS`` is the order of the sections beyond the note in report.md; ``READING_ORDER``
is the order of the Findings, which lead with the note's three claims rather than follow the sections. What a
section shows, and which files it writes, is declared in its own module (section.py says how).

    report.md:  intro, Findings, the note's figures (reproduction.py), "Beyond the note" (SECTIONS), the note's tables
"""

from __future__ import annotations

import io
from pathlib import Path

from sae_sweep.analysis.report import (
    anisotropic,
    architectures,
    budget,
    calibration,
    controls,
    core,
    error_bars,
    families,
    ground_truth,
    liveness,
    matching,
    movement,
    reproduction,
    split,
    verdicts,
)
from sae_sweep.analysis.report.section import ReportInput, write_section

SECTIONS = (
    verdicts.SECTION,
    calibration.SECTION,
    families.SECTION,
    core.SECTION,
    liveness.SECTION,
    movement.SECTION,
    matching.SECTION,
    split.SECTION,
    error_bars.SECTION,
    anisotropic.SECTION,
    controls.SECTION,
    ground_truth.SECTION,
    architectures.SECTION,
    budget.SECTION,
)

READING_ORDER = (
    reproduction.training,
    reproduction.claim_low_mode,
    reproduction.claim_correlated,
    reproduction.claim_counts,
    split.bimodality,
    verdicts.per_size,
    calibration.estimates,
    verdicts.rows_beaten,
    families.splitting,
    core.carried,
    budget.training_budget,
    error_bars.low_mode_vs_random,
    liveness.liveness,
    movement.movement,
    split.split,
    matching.matching,
    anisotropic.anisotropy,
    controls.controls,
    ground_truth.ground_truth,
    verdicts.truth,
    calibration.measured,
    families.truth,
    architectures.modes_finding,
    architectures.stability_finding,
)


def findings(rep: ReportInput) -> list[str]:
    """Every Finding whose numbers exist, in reading order."""
    return [f for f in (finding(rep) for finding in READING_ORDER) if f]


def write_all(rep: ReportInput, out: Path, label: str = "main run") -> dict[str, Path]:
    """Every table and figure, findings.md and report.md into ``out``; returns {key: path} of the figures.

    The Findings come in one list for the main run (``label``) and, when ``rep.synthetic`` is set, one for that
    synthetic-data control, from its own numbers.
    """
    out.mkdir(parents=True, exist_ok=True)
    note_figs, tables = reproduction.write(rep, out)
    figs = dict(note_figs)
    beyond = io.StringIO()
    beyond.write("## Beyond the note\n\n")
    for note in rep.ex.notes + (rep.synthetic.measures.notes if rep.synthetic else []):
        beyond.write(f"> **Note:** {note}\n\n")
    for section in SECTIONS:
        written = write_section(section, rep, out)
        figs.update(written.figures)
        beyond.write(written.markdown)
    found = {label: findings(rep)}
    if rep.synthetic is not None:
        found[f"synthetic data (variant {rep.synthetic.variant!r})"] = findings(ReportInput(rep.synthetic))
    findings_md = findings_markdown(found)
    (out / "findings.md").write_text(findings_md)
    report = report_markdown(rep, note_figs, tables, findings_md, beyond.getvalue())
    (out / "report.md").write_text(report)
    return figs


def findings_markdown(found: dict[str, list[str]]) -> str:
    md = io.StringIO()
    md.write(
        "## Findings\n\n_Generated from this report's numbers by the report's sections (`sae_sweep/analysis/report/`): "
        "no hand-written claims._\n\n"
    )
    for label, items in found.items():
        md.write(f"### {label}\n\n")
        md.write("".join(f"- {item}\n" for item in items) if items else "_(not enough dictionaries for findings)_\n")
        md.write("\n")
    return md.getvalue()


def report_markdown(
    rep: ReportInput, figs: dict[str, Path], tables: reproduction.Tables, findings_md: str = "", beyond_md: str = ""
) -> str:
    """report.md: the intro, Findings, the note's figures (``figs``), the sections beyond it, then the note's
    tables."""
    res, cfg = rep.res, rep.cfg
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
    for number, claim in reproduction.NOTE_FIGURES.items():
        key = f"fig{number:02d}"
        needs = "three or more sizes" if number in (9, 10) else "two or more sizes"
        ours = f"[{figs[key].name}]({figs[key].name})" if key in figs else f"skipped (needs {needs})"
        md.write(f"| Figure {number} | {claim} | {ours} |\n")
    md.write("\n")
    for key, path in figs.items():
        md.write(f"### {key.replace('fig', 'Figure ').replace('Figure 0', 'Figure ')}\n\n![{key}]({path.name})\n\n")
    md.write(beyond_md)
    md.write("## Tables\n\n")
    for csv_name, (title, table) in tables.items():
        md.write(f"### {title} ([{csv_name}]({csv_name}))\n\n{table}\n")
    return md.getvalue()
