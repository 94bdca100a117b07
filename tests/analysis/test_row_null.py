"""The verdicts on dictionaries of random activation rows (measures/row_null.py) and the Finding that says whether
``real`` beats them (report/verdicts.py)."""

from types import SimpleNamespace

import numpy as np
import pytest

from sae_sweep.analysis.measures.inference import score_difference
from sae_sweep.analysis.measures.row_null import RowNull, compare, row_dictionaries, row_null
from sae_sweep.analysis.measures.verdicts import COLUMNS, Verdicts
from sae_sweep.analysis.report.section import ReportInput
from sae_sweep.analysis.report.verdicts import row_null_rows, rows_beaten
from sae_sweep.analysis.settings import AnalysisConfig

CFG = AnalysisConfig()


def _table(j: int, verdicts: list[str]) -> np.ndarray:
    t = np.zeros(len(verdicts), dtype=list(COLUMNS))
    t["dict_size"], t["verdict"] = j, verdicts
    return t


def test_compare_counts_live_learned_features_and_every_row_feature():
    # learned at J=4 (two seeds): 3 real of 6 live (2 dead left out); the J=8 rows do not count at J=4
    seed0, seed1 = ["real", "real", "dead", "unreplicated"], ["real", "dead", "unreplicated", "unreplicated"]
    tables = np.concatenate([_table(4, seed0), _table(4, seed1), _table(8, ["real"] * 8)])
    learned = Verdicts("", ["isotropic"], "", tables)
    rows = Verdicts("", ["isotropic"], "", _table(4, ["real"] + ["unreplicated"] * 7))
    r = compare(learned, rows, 4, 0.9, 0.95)
    assert (r.learned_real, r.learned_features, r.row_real, r.row_features) == (3, 6, 1, 8)
    assert (r.difference, r.lo, r.hi) == score_difference(3, 6, 1, 8, 0.95)
    assert r.learned_share == 0.5 and r.row_share == 1 / 8 and r.floor == 0.9


def test_row_dictionaries_are_distinct_rows_split_into_seeds():
    acts = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)
    made = row_dictionaries(acts, 16, 3, seed=0)
    assert sorted(made) == [(16, 0), (16, 1), (16, 2)]
    rows = np.concatenate([a.rows for a in made.values()])
    assert rows.shape == (48, 5) and len(np.unique(rows, axis=0)) == 48  # no row in two dictionaries
    assert all(a.firing is None for a in made.values())  # never dead: every row feature is judged
    assert np.array_equal(rows, np.concatenate([a.rows for a in row_dictionaries(acts, 16, 3, 0).values()]))


def _rep(rows: list[RowNull]) -> ReportInput:
    return ReportInput(run=SimpleNamespace(measured=lambda f: rows, results=SimpleNamespace(config=CFG)))


def _row(j: int, k1: int, n1: int, k2: int, n2: int) -> RowNull:
    return RowNull(j, 0.95, n2, k2, n1, k1, *score_difference(k1, n1, k2, n2, CFG.level))


def test_the_finding_says_where_real_does_not_beat_rows_and_why_from_the_interval():
    beats = _row(256, 60, 200, 5, 200)  # 30% vs 2.5%: lower end far above 0
    below = _row(1024, 10, 1000, 80, 1000)  # 1% vs 8%: the whole interval below 0
    level = _row(2048, 20, 400, 22, 400)  # 5% vs 5.5%: the interval spans 0
    assert beats.beats and not below.beats and not level.beats and below.hi < 0 <= level.hi
    text = rows_beaten(_rep([beats, below, level]))
    assert "rows are called real more often than learned features at J=1024" in text
    assert "the two shares are not told apart at J=2048" in text
    assert "`real` does not beat random activation rows where" in text and "J=256 and" not in text
    said = f"J=256: 30.0% of learned live features vs 2.5% of rows, difference +27.5 points [{100 * beats.lo:+.1f}"
    assert said in text
    clear = rows_beaten(_rep([beats]))
    assert "At every size learned features are called real more often than rows" in clear and "does not" not in clear
    assert rows_beaten(_rep([])) is None
    (csv,) = row_null_rows(_rep([beats]))
    assert (csv["learned_real"], csv["learned_live"], csv["row_real"], csv["row_features"]) == (60, 200, 5, 200)


@pytest.fixture(scope="module")
def rows_run():
    """Two seeds of learned-looking dictionaries (4 of whose 8 atoms are the same in both) on 400 rows of data."""
    from sae_sweep.analysis.measures.verdicts import Atoms, verdicts  # noqa: PLC0415

    rng = np.random.default_rng(1)
    acts = rng.normal(size=(400, 6)).astype(np.float32)
    shared = rng.normal(size=(4, 6))
    a = np.concatenate([shared, rng.normal(size=(4, 6))]).astype(np.float32)
    b = np.concatenate([shared, rng.normal(size=(4, 6))]).astype(np.float32)
    atoms = {(8, 0): Atoms("a", a, np.ones(8)), (8, 1): Atoms("b", b, np.ones(8))}
    learned = verdicts(atoms, CFG, acts)
    return SimpleNamespace(
        results=SimpleNamespace(config=CFG), dicts=dict.fromkeys(atoms), cache_dir=None, acts=acts, learned=learned
    )


def test_row_null_judges_as_many_row_dictionaries_as_seeds_at_the_learned_floor(rows_run, monkeypatch):
    import sae_sweep.analysis.measures.row_null as module  # noqa: PLC0415

    monkeypatch.setattr(module, "activations_of", lambda dicts, cache: rows_run.acts)
    rows_run.measured = lambda f: rows_run.learned
    (r,) = row_null(rows_run)
    assert (r.dict_size, r.learned_features, r.row_features, r.floor) == (8, 16, 16, CFG.match_cosine)
    assert r.learned_real == int((rows_run.learned.table["verdict"] == "real").sum()) >= 8  # the shared atoms
    monkeypatch.setattr(module, "activations_of", lambda dicts, cache: None)
    assert row_null(rows_run) == []  # no cache: no rows to draw
