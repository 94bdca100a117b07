"""Hand-made inputs for the report's Findings: a ``ReportInput`` around whatever pieces a test builds."""

from __future__ import annotations

from sae_sweep.analysis.measures.pairwise import Results
from sae_sweep.analysis.measures.variant import AnalysedRun, VariantMeasures
from sae_sweep.analysis.report.section import ReportInput
from sae_sweep.analysis.settings import AnalysisConfig


def report_input(res: Results | None = None, ex: VariantMeasures | None = None, **tables) -> ReportInput:
    """``res`` and ``ex`` as the main run (empty ones where a Finding reads neither), ``tables`` as the sweep's rows
    (controls, architectures, stability)."""
    res = res if res is not None else Results(AnalysisConfig(), 16, [], [0], 0, None)
    ex = ex if ex is not None else VariantMeasures("", {})
    return ReportInput(AnalysedRun("", res, ex), **tables)
