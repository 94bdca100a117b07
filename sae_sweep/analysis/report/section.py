"""What a section of the report is, what it is written from, and how it is written.

A ``Section`` declares in one place everything it shows: its heading and text, its figure (the file and the function
that draws it), its tables (title, CSV file, the function that gives the rows) and its Findings (functions that
return a sentence, or None when their numbers are missing). ``document.py`` orders the sections and the Findings;
``write_section`` writes any of them the same way:

    ### <heading>
    <text>
    ![<figure key>](<figure file>)
    #### <table title> ([<file>](<file>))
    <Markdown table>               (and the rows as <file>, a CSV beside report.md)

Every function a section holds takes one ``ReportInput``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sae_sweep.analysis.measures.pairwise import Results
from sae_sweep.analysis.measures.variant import AnalysedRun, VariantMeasures
from sae_sweep.analysis.report.tables import markdown_table, write_csv
from sae_sweep.analysis.settings import AnalysisConfig


@dataclass(frozen=True)
class ReportInput:
    """What the report is written from: the run its sections and Findings are about, and the sweep-wide rows."""

    run: AnalysedRun  # the main run (or a synthetic-data control, for that control's own Findings)
    synthetic: AnalysedRun | None = None  # a synthetic-data control whose ground truth and budget join the main run's
    controls: list[dict] = field(default_factory=list)  # every variant's rows (measures/controls.py), main run's too
    architectures: list[dict] = field(default_factory=list)  # measures/architectures.py: architecture_table
    stability: list[dict] = field(default_factory=list)  # measures/architectures.py: stability of that table

    @property
    def res(self) -> Results:
        return self.run.results

    @property
    def ex(self) -> VariantMeasures:
        return self.run.measures

    @property
    def cfg(self) -> AnalysisConfig:
        return self.run.results.config


Finding = Callable[[ReportInput], "str | None"]


@dataclass(frozen=True)
class Plot:
    key: str  # "fig13": the name report.md and W&B show
    file: str  # "fig13_mcs_vs_firing.png"
    draw: Callable[[ReportInput, Path], Path | None]  # None: nothing to draw from this input


@dataclass(frozen=True)
class Table:
    title: str
    file: str  # the CSV beside report.md
    rows: Callable[[ReportInput], list[dict]]
    optional: bool = False  # True: neither file nor Markdown when there are no rows ("_(none)_" otherwise)
    markdown: bool = True  # False: the file and a line saying how many rows it has (a table too long to read)


@dataclass(frozen=True)
class Section:
    heading: str
    text: str | Callable[[ReportInput], str]
    plot: Plot | None = None
    tables: tuple[Table, ...] = ()
    findings: tuple[Finding, ...] = ()
    shown: Callable[[ReportInput], bool] = lambda rep: True  # False: the section is left out whole


@dataclass
class Written:
    figures: dict[str, Path] = field(default_factory=dict)  # key -> the file drawn
    markdown: str = ""


def write_section(section: Section, rep: ReportInput, out: Path) -> Written:
    """The section's figure and CSV files in ``out``, and its Markdown; nothing when it is not shown."""
    if not section.shown(rep):
        return Written()
    text = section.text(rep) if callable(section.text) else section.text
    md = [f"### {section.heading}\n\n{text}\n\n"]
    figures = {}
    if section.plot is not None and (path := section.plot.draw(rep, out / section.plot.file)) is not None:
        figures[section.plot.key] = path
        md.append(f"![{section.plot.key}]({path.name})\n\n")
    for table in section.tables:
        rows = table.rows(rep)
        if table.optional and not rows:
            continue
        write_csv(out / table.file, rows)
        body = markdown_table(rows) if table.markdown else f"{len(rows)} rows, in the file.\n"
        md.append(f"#### {table.title} ([{table.file}]({table.file}))\n\n{body}\n")
    return Written(figures, "".join(md))


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal; "n/a" for a missing or undefined one."""
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"
