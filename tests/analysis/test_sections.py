"""The report's sections: every Finding is read in order, and a new metric is one measure plus one section."""

import csv

import numpy as np

from sae_sweep.analysis.measures.pairwise import compute
from sae_sweep.analysis.measures.variant import AnalysedRun, VariantMeasures
from sae_sweep.analysis.report import document, reproduction
from sae_sweep.analysis.report.section import ReportInput, Section, Table, write_section
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import load_dictionary
from sae_sweep.store import ArtifactStore

from ..conftest import save_dict


def test_every_sections_findings_are_in_the_reading_order_once():
    declared = [f for s in document.SECTIONS for f in s.findings]
    own = [reproduction.training, reproduction.claim_low_mode, reproduction.claim_correlated, reproduction.claim_counts]
    assert sorted(map(id, document.READING_ORDER)) == sorted(map(id, own + declared))
    assert len(set(document.READING_ORDER)) == len(document.READING_ORDER)


calls = []


def live_fraction(run: AnalysedRun) -> list[dict]:
    """A new measure: the fraction of each dictionary's features that fired held out."""
    calls.append(run.variant)
    return [
        {"dict_size": j, "seed": s, "live": float((d.firing_counts > 0).mean())}
        for (j, s), d in sorted(run.dicts.items())
    ]


def smallest_live(rep: ReportInput) -> str | None:
    rows = rep.run.measured(live_fraction)
    low = min(rows, key=lambda r: r["live"])
    return f"J={low['dict_size']} has the fewest live features: {low['live']:.2f}."


NEW = Section(
    heading="Live features",
    text="Each dictionary's fraction of features that fired on held-out activations.",
    tables=(Table("live", "live.csv", lambda rep: rep.run.measured(live_fraction)),),
    findings=(smallest_live,),
)


def test_a_new_metric_is_one_measure_and_one_section(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    for j, live in ((8, 8), (16, 4)):
        save_dict(store, j, 0, counts=np.array([1] * live + [0] * (j - live), dtype=np.int64))
    dicts = {(d.dict_size, 0): d for d in (load_dictionary(store.get(n).path) for n in store.names("sae-dictionary"))}
    res = compute(dicts, AnalysisConfig(n_random=1))
    rep = ReportInput(AnalysedRun("", res, VariantMeasures("", {}), dicts))
    written = write_section(NEW, rep, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "live.csv")))
    assert [(r["dict_size"], r["live"]) for r in rows] == [("8", "1.0"), ("16", "0.25")]
    assert "### Live features" in written.markdown and "([live.csv](live.csv))" in written.markdown
    assert smallest_live(rep) == "J=16 has the fewest live features: 0.25."
    assert calls == [""]  # measured once, shared by the table and the Finding


def test_the_wandb_tables_cells_are_typed_back_from_the_csv():
    from sae_sweep.analysis.wandb_run import typed as _typed  # noqa: PLC0415

    cells = ["3", "0.5", "", "None", "True", "False", "real", "1e-05", "sae-L2-J8-s0"]
    assert [_typed(c) for c in cells] == [3, 0.5, None, None, True, False, "real", 1e-05, "sae-L2-J8-s0"]


def test_the_analysis_is_written_into_each_training_runs_summary_through_the_api(caplog):
    """The public API stands in for a W&B server (none exists here): each dictionary's results land in its training
    run's summary under analysis/*, and a run the API cannot find is named in a warning and skipped."""
    from sae_sweep.analysis.wandb_run import annotate_training_runs  # noqa: PLC0415

    class Run:
        def __init__(self) -> None:
            self.summary, self.updates = {}, 0

        def update(self) -> None:
            self.updates += 1

    class Api:
        def __init__(self) -> None:
            self.runs = {"team/sae-sweep/sae-L2-J8-s0-abc": Run()}

        def run(self, path: str):
            if path not in self.runs:
                raise ValueError(f"Could not find run {path}")
            return self.runs[path]

    verdicts = {"real": 3, "unreplicated": 4, "dead": 1, "no_reference": 0}
    rows = [{"run_id": "sae-L2-J8-s0-abc", "mean_mcs": 0.5, "high_fraction": 0.25, "reference": 16, **verdicts},
            {"run_id": "gone", "mean_mcs": None, "high_fraction": None, "reference": 16, **verdicts}]  # fmt: skip
    api = Api()
    assert annotate_training_runs(api, "team", "sae-sweep", rows) == 1
    target = api.runs["team/sae-sweep/sae-L2-J8-s0-abc"]
    assert target.updates == 1 and target.summary == {
        "analysis/mean_mcs": 0.5, "analysis/high_fraction": 0.25, "analysis/reference": 16, "analysis/real": 3,
        "analysis/unreplicated": 4, "analysis/dead": 1, "analysis/no_reference": 0,
    }  # fmt: skip
    assert "could not write the analysis into W&B run team/sae-sweep/gone (ValueError" in caplog.text
