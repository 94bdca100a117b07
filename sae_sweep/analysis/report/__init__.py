"""The report: sections that each declare their figure, tables and Findings, and the document that orders them.

    section.py                     what a section is (``Section``, ``Plot``, ``Table``) and what it is written from
                                   (``ReportInput``); ``write_section``
    document.py                    the order of the sections and of the Findings; report.md and findings.md
    tables.py, plots.py            CSV and Markdown tables; the figures' colours and saving
    reproduction.py                the note's Figures 3-12 and tables, and its three claims decided
    reproduction_figures.py        the drawing of Figures 3-12
    verdicts.py, calibration.py, families.py, core.py, liveness.py, movement.py, matching.py, split.py,
    error_bars.py, anisotropic.py, controls.py, ground_truth.py, architectures.py, budget.py
                                   one section each, beyond the note (Figures 13-23)

A new metric is a measure (measures/: a function of the variant's ``AnalysedRun``, which its section reads through
``rep.run.measured(measure)``, computed once) and a section here, listed in document.py's SECTIONS and
READING_ORDER.
"""
