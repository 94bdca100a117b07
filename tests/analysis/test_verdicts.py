"""Which features are real, one by one (measures/null_tail.py, verdicts.py, verdict_checks.py): exact values on
hand-made dictionaries, and the calibration the FDR promises on null dictionaries."""

import re
from dataclasses import replace

import numpy as np
import pytest

from sae_sweep import ConfigError
from sae_sweep.analysis.measures.inference import bh_qvalues, partial_conjunction, wilson_interval
from sae_sweep.analysis.measures.null_tail import fit_tail, tail_p
from sae_sweep.analysis.measures.nulls import activation_dictionary, random_dictionary, sample_analytic_null
from sae_sweep.analysis.measures.verdict_checks import split_rows, truth_rows
from sae_sweep.analysis.measures.verdicts import Atoms, decide, independent, verdicts
from sae_sweep.analysis.settings import AnalysisConfig

CFG = AnalysisConfig(verdict_null="isotropic")


def test_the_tail_is_the_analytic_nulls_on_hand_computed_cases():
    # In 3 dimensions one random cosine is uniform on [-1, 1] (Archimedes): P(max of M >= c) = 1 - ((c + 1) / 2)^M
    assert tail_p(0.5, 3, 2) == pytest.approx(1 - 0.75**2, rel=1e-12)
    assert tail_p(0.0, 3, 5) == pytest.approx(1 - 0.5**5, rel=1e-12)
    assert tail_p(-1.0, 3, 4) == pytest.approx(1.0) and tail_p(1.0, 3, 4) == 0.0
    # far in the tail, where 1 - F^M would round to 0: K = 3, M = 1 gives (1 - c) / 2 exactly
    assert tail_p(1 - 2e-300, 3, 1) == pytest.approx(1e-300, rel=1e-6)
    with pytest.raises(ConfigError, match="K > 1 and M > 0"):
        tail_p(0.5, 1, 3)


def test_the_fitted_tail_recovers_the_parameters_of_an_exact_null_sample():
    for K, M in ((128, 1024), (16, 256)):
        tail = fit_tail(sample_analytic_null(8192, K, M, seed=0))
        assert tail.K == pytest.approx(K, rel=0.1)


def test_bh_gives_the_textbook_q_values_and_the_partial_conjunction_its_bonferroni_form():
    assert bh_qvalues([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert bh_qvalues([0.5, 0.9]).tolist() == pytest.approx([0.9, 0.9])  # monotone from the top
    p = np.array([[0.01, 0.2, 0.03], [0.5, 0.001, 0.002]])
    assert partial_conjunction(p, 1).tolist() == pytest.approx([0.03, 0.003])  # 3 x the smallest
    assert partial_conjunction(p, 2).tolist() == pytest.approx([0.06, 0.004])  # 2 x the second smallest
    assert partial_conjunction(p, 3).tolist() == pytest.approx([0.2, 0.5])  # the largest


def _atoms(rows: np.ndarray, name: str, firing=None) -> Atoms:
    return Atoms(name, rows.astype(np.float32), np.ones(len(rows)) if firing is None else firing)


def _pair(d: int = 16, planted: int = 6, J: int = 12, seed: int = 0):
    """Two seeds of size J in d dimensions sharing ``planted`` unit atoms (shuffled), the rest random."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((planted, d))
    out = {}
    for s in (0, 1):
        rows = np.concatenate([shared, rng.standard_normal((J - planted, d))])
        out[(J, s)] = rows[rng.permutation(J)] if s else rows
    return out


def test_a_planted_copy_is_real_a_random_atom_is_not_and_a_silent_one_is_dead():
    pair = _pair()
    firing = np.ones(12)
    firing[0] = 0.0  # seed 0's first (planted) feature never fires held out
    atoms = {(12, 0): _atoms(pair[(12, 0)], "a", firing), (12, 1): _atoms(pair[(12, 1)], "b")}
    t = verdicts(atoms, CFG).table
    mine = t[t["name"] == "a"]
    assert mine["verdict"][0] == "dead"
    assert set(mine["verdict"][1:6]) == {"real"} and set(mine["verdict"][6:]) == {"unreplicated"}
    assert np.allclose(mine["match_cos"][1:6], 1.0) and (mine["replications"][1:6] == 1).all()
    assert (mine["stability"][1:6] == 1.0).all() and (mine["references"] == 1).all()
    # a match's p-value is the largest of the fitted nulls' tails at its cosine; below match_cosine it does not count
    v = verdicts(atoms, CFG)
    cos, _, p, _ = v.matches[((12, 0), (12, 1))]
    assert p[7] == pytest.approx(max(float(t.p(cos[7])) for t in v.tails[(12, 1)].values()), rel=1e-9)
    assert cos[7] < CFG.match_cosine and mine["p"][7] == 1.0


def test_one_seed_claims_nothing():
    atoms = {
        (12, 0): _atoms(_pair()[(12, 0)], "a"),
        (24, 0): _atoms(np.random.default_rng(1).normal(size=(24, 16)), "b"),
    }
    t = verdicts(atoms, CFG).table
    assert set(t["verdict"]) == {"no_reference"} and np.isnan(t["q"]).all() and (t["references"] == 0).all()
    assert independent((12, 0), sorted(atoms)) == []


def test_independent_references_are_the_other_seeds_at_the_nearest_size():
    keys = [(256, 0), (512, 0), (512, 1), (2048, 1), (1024, 2)]
    assert independent((512, 0), keys) == [(512, 1), (1024, 2)]
    assert independent((2048, 1), keys) == [(512, 0), (1024, 2)]  # 512 at seed 0: the only size there


def test_decide_needs_min_replications_independent_references():
    p = np.array([[1e-9, 0.9], [0.5, 1e-9], [1e-9, 1e-9]])
    two = replace(CFG, min_replications=2)
    assert decide(None, p, p, CFG)["verdict"].tolist() == ["real", "real", "real"]  # found in at least one
    assert decide(None, p, p, two)["verdict"].tolist() == ["unreplicated", "unreplicated", "real"]  # in both
    assert decide(None, p[:, :1], p[:, :1], two)["verdict"].tolist() == ["no_reference"] * 3


def _any_real_rate(make, n_sets: int, cfg: AnalysisConfig, acts=None) -> tuple[float, int]:
    """Null dictionary pairs (two seeds each) from ``make(n, seed)``: the share of dictionaries with any real call.
    Each pair is one draw of 128 rows split in two, so that no activation row is in both."""
    hits = 0
    for i in range(n_sets):
        a, b = np.split(np.asarray(make(128, i)), 2)
        t = verdicts({(64, 0): _atoms(a, "a"), (64, 1): _atoms(b, "b")}, cfg, acts).table
        hits += int((t[t["name"] == "a"]["verdict"] == "real").any())
    return hits / n_sets, n_sets


def _activations(n: int = 20000, d: int = 16, seed: int = 0) -> np.ndarray:
    """Anisotropic, non-negative, sparse rows: a few directions, mostly one at a time, plus a common offset; ``seed``
    draws the rows, the directions are always the same."""
    basis = np.abs(np.random.default_rng(12345).standard_normal((8, d)))
    rng = np.random.default_rng(seed)
    codes = rng.exponential(1.0, (n, 8)) * (rng.random((n, 8)) < 0.2)
    return (codes @ basis + 0.3 + 0.05 * rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize(
    ("family", "null"),
    [("isotropic", "auto"), ("gaussian with the data's second moment", "auto"), ("activation rows", "rows")],
)
def test_null_dictionaries_get_a_real_call_no_more_often_than_the_fdr(family, null):
    """The global null: nothing is shared, so BH keeps the chance of any real call in a dictionary at the FDR (the
    match_cosine floor lowered to 0.5, so that the test, not the floor, decides). Dictionaries of activation rows
    share repeated rows, which the default nulls call found again; the rows null is checked on them."""
    acts = _activations()
    moment = acts.T.astype(np.float64) @ acts / len(acts)
    makes = {
        "isotropic": lambda n, s: random_dictionary(n, 16, s),
        "activation rows": lambda n, s: activation_dictionary(acts, n, 1000 + s),
        "gaussian with the data's second moment": lambda n, s: np.random.default_rng(s).multivariate_normal(
            np.zeros(16), moment, n
        ),
    }
    cfg = AnalysisConfig(null_rows=1024, verdict_null=null, match_cosine=0.5)
    rate, n = _any_real_rate(makes[family], 60, cfg, acts if family != "activation rows" else _activations(seed=7))
    lo, _ = wilson_interval(round(rate * n), n, 0.95)
    assert lo <= cfg.fdr, f"{family}: {rate:.0%} of null dictionaries had a real call"


def test_split_rows_count_agreement_feature_by_feature():
    v = verdicts({(12, 0): _atoms(_pair()[(12, 0)], "a"), (12, 1): _atoms(_pair()[(12, 1)], "b")}, CFG)
    v.table["mcs_reference"] = np.where(v.table["verdict"] == "real", 0.9, 0.2)  # the split agrees everywhere...
    v.table["mcs_reference"][0] = 0.2 if v.table["verdict"][0] == "real" else 0.9  # ...but on one feature
    a = next(r for r in split_rows(v, CFG) if r["name"] == "a")
    assert a["agreement"] == pytest.approx(11 / 12) and a["high_not_real"] + a["real_not_high"] == 1


def test_precision_and_recall_against_the_truth():
    pair = _pair()
    truth = np.concatenate([pair[(12, 0)][:6]])  # the planted atoms are the true features
    atoms = {k: _atoms(v, f"s{k[1]}") for k, v in pair.items()}
    v = verdicts(atoms, CFG)
    (row,) = truth_rows(v, atoms, truth, CFG)
    assert (row["precision"], row["recall"], row["called_real"], row["true_matching"]) == (1.0, 1.0, 12, 12)


def _planted_store(tmp_path):
    from sae_sweep.store import ArtifactStore  # noqa: PLC0415

    from ..conftest import save_dict  # noqa: PLC0415

    store = ArtifactStore(tmp_path / "store")
    pair = _pair(J=12)
    for (J, s), rows in pair.items():
        save_dict(store, J, s, decoder=rows.T, d_in=16)
        save_dict(store, 24, s, decoder=np.concatenate([rows, rows + 0.01]).T, d_in=16)
    return store


@pytest.mark.slow  # a whole analysis (in process or a subprocess): out of the inner loop
def test_one_dictionary_or_one_feature_is_asked_from_the_command_line(tmp_path):
    from ..conftest import run_analyze  # noqa: PLC0415

    _planted_store(tmp_path)
    asked = run_analyze(["logger=none", "analysis.only=sae-L2-J12-s0"], tmp_path)
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert "sae-L2-J12-s0: 12 features: 6 real, 6 unreplicated, 0 dead, 0 no_reference" in asked.stdout
    assert not (tmp_path / "analysis").exists()  # no report: only the question
    one = run_analyze(["logger=none", "analysis.only=sae-L2-J12-s1:0"], tmp_path)
    assert one.returncode == 0 and "sae-L2-J12-s1:0: " in one.stdout and "in J=24 seed 0: feature" in one.stdout
    # Refusals, in process (the command line's one line and status 2 for a refused analysis: test_cli_fuzz.py)
    from sae_sweep.analysis.collect import SourceConfig  # noqa: PLC0415
    from sae_sweep.analysis.job import AnalyzeJob, run  # noqa: PLC0415
    from sae_sweep.errors import SaeSweepError  # noqa: PLC0415
    from sae_sweep.store import Paths  # noqa: PLC0415
    from sae_sweep.tracking import LoggerConfig  # noqa: PLC0415

    bad = {"sae-L2-J99-s0": "analysis.only: no dictionary named 'sae-L2-J99-s0' here", " ": "give a dictionary's name"}
    for only, says in bad.items():
        job = AnalyzeJob(AnalysisConfig(only=only), SourceConfig(), LoggerConfig(kind="none"), Paths(tmp_path))
        with pytest.raises(SaeSweepError, match=re.escape(says)):
            run(job)


def test_the_python_question_returns_every_feature_of_the_variant(tmp_path):
    from sae_sweep.analysis.question import feature_table  # noqa: PLC0415

    store = _planted_store(tmp_path)
    t = feature_table(store.root, "sae-L2-J12-s0")
    assert len(t) == 2 * (12 + 24) and set(t["name"]) == {f"sae-L2-J{j}-s{s}" for j in (12, 24) for s in (0, 1)}
    mine = t[t["name"] == "sae-L2-J12-s0"]
    assert (mine["verdict"] == "real").sum() == 6 and (mine["match_in"] == "sae-L2-J12-s1").all()


def test_the_python_question_answers_from_the_reports_dictionaries_and_says_which_it_leaves_out(tmp_path):
    """A dictionary the report leaves out (here seed 2, which has no J=24 to compare with) is named with the reason,
    never answered from a comparison the report does not make; an unknown name names the Python argument."""
    from sae_sweep.analysis.question import feature_table  # noqa: PLC0415

    from ..conftest import save_dict  # noqa: PLC0415

    store = _planted_store(tmp_path)
    whole = feature_table(store.root, "sae-L2-J12-s0")
    save_dict(store, 12, 2, d_in=16)
    again = feature_table(store.root, "sae-L2-J12-s0")
    assert again.tobytes() == whole.tobytes()  # the same rows, bit for bit (NaN where no match): seed 2 not in them
    with pytest.raises(ConfigError, match=r"^sae-L2-J12-s2 is left out: seed 2 has no J=24, .*no rows for it either$"):
        feature_table(store.root, "sae-L2-J12-s2")
    with pytest.raises(ConfigError, match=r"^feature_table\(name='nope'\): no dictionary named 'nope' here"):
        feature_table(store.root, "nope")


def test_dictionaries_trained_on_other_activations_are_never_one_sweep(tmp_path):
    """Another GPT, or another harvest.n_tokens, under the same names: refused with both named, before any work."""
    from sae_sweep.analysis.collect import SourceConfig  # noqa: PLC0415
    from sae_sweep.analysis.job import AnalyzeJob, run  # noqa: PLC0415
    from sae_sweep.analysis.question import feature_table  # noqa: PLC0415
    from sae_sweep.errors import DataError  # noqa: PLC0415
    from sae_sweep.store import ArtifactStore, Paths  # noqa: PLC0415
    from sae_sweep.tracking import LoggerConfig  # noqa: PLC0415

    from ..conftest import save_dict  # noqa: PLC0415

    store = ArtifactStore(tmp_path / "store")
    for j in (8, 16):
        save_dict(store, j, 0)
    other = {"gpt": {"artifact": "gpt-embedded-s1:v0", "digest": "1" * 64, "val_loss": 4.0},
             "activations": {"key": "L2-N1000-other", "digest": "1" * 64, "n_tokens": 1000}}  # fmt: skip
    save_dict(store, 16, 1, extra=other)
    says = (r"the dictionaries of the main run were trained on different activations: sae-L2-J8-s0 \(and 1 more\) "
            r"on L2-N1000-test of gpt-embedded-s0:v0, sae-L2-J16-s1 \(and 0 more\) on L2-N1000-other of "
            r"gpt-embedded-s1:v0")  # fmt: skip
    job = AnalyzeJob(AnalysisConfig(), SourceConfig(), LoggerConfig(kind="none"), Paths(tmp_path), tmp_path / "out")
    with pytest.raises(DataError, match=says):
        run(job)
    with pytest.raises(DataError, match=says):
        feature_table(store.root)
    assert not (tmp_path / "out").exists()


def test_a_single_dictionary_is_reported_with_nothing_claimed(tmp_path, capsys):
    from sae_sweep.analysis.collect import SourceConfig  # noqa: PLC0415
    from sae_sweep.analysis.job import AnalyzeJob, run  # noqa: PLC0415
    from sae_sweep.store import ArtifactStore, Paths  # noqa: PLC0415
    from sae_sweep.tracking import LoggerConfig  # noqa: PLC0415

    from ..conftest import save_dict  # noqa: PLC0415

    save_dict(ArtifactStore(tmp_path / "store"), 16, 0)
    job = AnalyzeJob(AnalysisConfig(n_boot=20, n_perm=20), SourceConfig(), LoggerConfig(kind="none"), Paths(tmp_path))
    with pytest.warns(UserWarning, match="only one dictionary size"):
        report = run(job)
    counts = (report.parent / "verdicts.csv").read_text().splitlines()
    assert counts[1].startswith("sae-L2-J16-s0,16,0,16,0,0,0,16,")  # 16 features, every one no_reference
    printed = capsys.readouterr().out  # what there is, not an empty table and an empty "analytic null" line
    assert "no MCS table: one dictionary size only (J=16)" in printed and "\u250f" not in printed
    assert "analytic null" not in printed
    assert "No feature is called real: each dictionary has fewer other seeds" in report.read_text()


def test_any_name_a_dictionary_can_have_can_be_asked_about():
    """Imported SAEs keep their folders' names, spaces and "+" included: each can be asked about, alone or with a
    feature; only an empty name is refused."""
    from sae_sweep.analysis.question import parse_only  # noqa: PLC0415

    assert parse_only("my sae+16_s0") == ("my sae+16_s0", None)
    assert parse_only("my sae+16_s0:17") == ("my sae+16_s0", 17)
    assert parse_only("sae-L2-J1024-s0:x") == ("sae-L2-J1024-s0:x", None)  # not a feature: a name with a colon
    with pytest.raises(ConfigError, match="give a dictionary's name"):
        parse_only("  ")
