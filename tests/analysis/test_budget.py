"""The training-budget axis (measures/budget.py; report/budget.py: its section, Finding and Figure 19) on
dictionaries made by hand."""

import csv
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sae_sweep.analysis.collect import SourceConfig
from sae_sweep.analysis.job import AnalyzeJob, run
from sae_sweep.analysis.measures.budget import FINAL, SAME, Budget, _null_low, compute_budget, last_step
from sae_sweep.analysis.measures.pairwise import compute
from sae_sweep.analysis.measures.variant import VariantMeasures
from sae_sweep.analysis.report.budget import SECTION, training_budget
from sae_sweep.analysis.report.section import Written, write_section
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary, dictionary_name
from sae_sweep.store import ArtifactStore, Paths
from sae_sweep.tracking import LoggerConfig

from ..conftest import dictionary_config, save_dict
from .helpers import report_input

D_IN = 64  # wide enough that the exact null (M = 4) sits well below the cutoff
E = np.eye(D_IN, dtype=np.float32)
HALF = (E[1] + E[3]) / np.sqrt(2)  # cosine 1/sqrt(2) with e1 and e3: high, but moved away from e1


def cols(*vectors) -> torch.Tensor:
    return torch.tensor(np.stack(vectors, axis=1))  # (d_in, J)


def write_snapshots(folder, snaps) -> list[dict]:
    """snapshots.safetensors for [(steps, activations_seen, decoder (d_in, J), fired (J,))]; their metas."""
    tensors = {}
    for steps, _, dec, fired in snaps:
        tensors[f"decoder.{steps}"] = dec.clone().contiguous()
        tensors[f"fired.{steps}"] = torch.tensor(fired, dtype=torch.int64)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "snapshots.safetensors"))
    metric = {"loss": 1.0, "mse": 0.1, "fvu": 0.5, "l0": 2.0, "dead_fraction": 0.0}
    return [{"steps": steps, "activations_seen": seen, **metric} for steps, seen, _, _ in snaps]


def make(tmp_path, J, seed, decoder, seen, snaps=(), init=None, counts=None, converged=True) -> Dictionary:
    """A Dictionary of the final ``decoder`` after ``seen`` activations, with the given snapshots (steps = seen)."""
    folder = tmp_path / f"J{J}-s{seed}"
    training = {"converged": converged, "activations_seen": seen}
    if snaps:
        training["snapshots"] = write_snapshots(folder, snaps)
    config = dictionary_config(
        dictionary_name(2, J, seed),
        d_in=D_IN,
        dict_size=J,
        seed=seed,
        steps=seen,
        training=training,
        harvest={"n_val_tokens": 5000},  # the snapshots' evaluation sample is sae.eval_rows = 4096 of them
    )
    init = decoder if init is None else init
    counts = np.ones(J, dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
    return Dictionary(config.name, decoder, {"decoder": decoder, "decoder_init": init}, config, counts, folder)


def hand_made(tmp_path) -> dict:
    """J=2 and the reference J=4 of seed 0 with snapshots; seed 1 without.

    J=2 at 100, 300 (which the reference lacks) and 400 (final); the reference at 100, 200, 400 and 800 (final, the
    identity's first four columns). Against the reference at 100 and 400, one of J=2's two features has MCS 0.
    """
    small = make(
        tmp_path,
        2,
        0,
        cols(E[0], HALF),
        400,
        [(100, 100, cols(E[0], E[1]), [0, 5]), (300, 300, cols(E[0], E[2]), [3, 3])],
        init=cols(E[0], E[1]),
        counts=[0, 0],
        converged=False,
    )
    ref_snaps = [
        (100, 100, cols(E[0], E[2], E[3], E[2]), [1, 1, 1, 1]),  # e2 has MCS 0 here
        (200, 200, cols(E[0], E[1], E[2], E[3]), [1, 1, 1, 1]),
        (400, 400, cols(E[1], E[2], E[3], E[1]), [1, 1, 1, 1]),  # e0 has MCS 0 here, HALF 1/sqrt(2)
    ]
    ref = make(tmp_path, 4, 0, cols(E[0], E[1], E[2], E[3]), 800, ref_snaps)
    other = {(2, 1): make(tmp_path, 2, 1, cols(E[0], E[1]), 400), (4, 1): make(tmp_path, 4, 1, cols(*E[:4]), 400)}
    return {(2, 0): small, (4, 0): ref, **other}


def rows_by(budget: Budget) -> dict:
    return {(r["dict_size"], r["seed"], r["activations_seen"], r["reference_state"]): r for r in budget.rows}


def test_budgets_are_matched_by_activations_seen_and_the_final_row_is_there(tmp_path):
    dicts = hand_made(tmp_path)
    res = compute(dicts, AnalysisConfig(n_random=1))
    budget = compute_budget(res, dicts)
    rows = rows_by(budget)
    assert sorted(rows) == [  # 300: the reference has no state there, so only its final; seed 1 has no snapshots
        (2, 0, 100, FINAL),
        (2, 0, 100, SAME),
        (2, 0, 300, FINAL),
        (2, 0, 400, FINAL),
        (2, 0, 400, SAME),
    ]
    assert [rows[(2, 0, seen, SAME)]["reference_activations_seen"] for seen in (100, 400)] == [100, 400]
    assert {r["reference_activations_seen"] for k, r in rows.items() if k[3] == FINAL} == {800}
    assert [rows[(2, 0, seen, FINAL)]["final"] for seen in (100, 300, 400)] == [False, False, True]
    assert rows[(2, 0, 400, FINAL)]["steps"] == 400 and rows[(2, 0, 100, SAME)]["steps"] == 100
    # The final state against the final reference is the note's own MCS of J=2 against J=4.
    assert np.array_equal(budget.mcs[(2, 0, 400, FINAL)], res.vs_reference(2, 0))


def test_high_fraction_dead_and_never_moved_exact(tmp_path):
    dicts = hand_made(tmp_path)
    rows = rows_by(compute_budget(compute(dicts, AnalysisConfig(n_random=1)), dicts))
    high = {k: r["high_fraction"] for k, r in rows.items()}
    assert high == {
        (2, 0, 100, SAME): 0.5,  # e1 is not in the reference at 100
        (2, 0, 100, FINAL): 1.0,
        (2, 0, 300, FINAL): 1.0,
        (2, 0, 400, SAME): 0.5,  # e0 is not in the reference at 400; HALF has MCS 1/sqrt(2)
        (2, 0, 400, FINAL): 1.0,
    }
    assert [rows[(2, 0, s, FINAL)]["never_moved"] for s in (100, 300, 400)] == [1.0, 0.5, 0.5]
    assert [rows[(2, 0, s, FINAL)]["dead_fraction"] for s in (100, 300, 400)] == [0.5, 0.0, 1.0]
    assert [rows[(2, 0, s, FINAL)]["dead_on"] for s in (100, 300, 400)] == ["eval sample", "eval sample", "held-out"]
    assert [rows[(2, 0, s, FINAL)]["dead_rows"] for s in (100, 400)] == [4096, 5000]
    assert [rows[(2, 0, s, FINAL)]["converged"] for s in (100, 400)] == [None, False]


def test_low_emd_is_to_one_draw_of_the_exact_null_below_the_cutoff(tmp_path):
    dicts = hand_made(tmp_path)
    cfg = AnalysisConfig(n_random=1, cutoff=0.3)
    res = compute(dicts, cfg)
    rows = rows_by(compute_budget(res, dicts))
    assert rows[(2, 0, 100, FINAL)]["low_emd_null"] is None and rows[(2, 0, 100, FINAL)]["n_low"] == 0
    first, second = rows[(2, 0, 100, SAME)], rows[(2, 0, 400, SAME)]
    assert first["n_low"] == second["n_low"] == 1  # one MCS of exactly 0 at both budgets
    assert first["low_emd_null"] == second["low_emd_null"]  # the same null draw at every budget
    null = _null_low(2, res, cfg)  # one draw of J = 2 values of the exact null (K = 64, M = 4), below the cutoff
    assert null.size == 2 and (null < cfg.cutoff).all()
    assert first["low_emd_null"] == pytest.approx(float(np.mean(np.abs(null))))  # W1 from a point mass at 0
    cut = replace(cfg, cutoff=float(null.max()))  # the same draw, its larger value now above the cutoff
    kept = null[null < cut.cutoff]
    assert kept.size == 1 and rows_by(compute_budget(compute(dicts, cut), dicts))[(2, 0, 100, SAME)][
        "low_emd_null"
    ] == pytest.approx(abs(float(kept[0])))
    other = rows_by(compute_budget(compute(dicts, replace(cfg, seed=1)), dicts))
    assert other[(2, 0, 100, SAME)]["low_emd_null"] != first["low_emd_null"]  # another seed: another draw


def test_without_snapshots_there_is_no_section(tmp_path):
    dicts = {k: v for k, v in hand_made(tmp_path).items() if k[1] == 1}
    res = compute(dicts, AnalysisConfig(n_random=1))
    assert compute_budget(res, dicts) is None
    assert write_section(SECTION, report_input(res), tmp_path) == Written()
    assert not (tmp_path / "budget.csv").exists()


def test_recovery_per_budget_and_the_figure(tmp_path):
    dicts = hand_made(tmp_path)
    res = compute(dicts, AnalysisConfig(n_random=1))
    true = E[:3]  # three true features: e0, e1, e2
    budget = compute_budget(res, dicts, "synthetic", true)
    got = {(r["dict_size"], r["activations_seen"]): r["recovered_fraction"] for r in budget.recovery}
    assert got == {
        (2, 100): 2 / 3,
        (2, 300): 2 / 3,
        (2, 400): 1 / 3,  # HALF is 1/sqrt(2) from e1: not recovered at 0.9
        (4, 100): 2 / 3,
        (4, 200): 1.0,
        (4, 400): 2 / 3,
        (4, 800): 1.0,
    }
    ex = VariantMeasures("synthetic", {})
    ex.budget = budget
    written = write_section(SECTION, report_input(res, ex), tmp_path)
    figs, md = written.figures, written.markdown
    assert figs["fig19"] == tmp_path / "fig19_budget.png"
    assert figs["fig19"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "### Training budget" in md and "![fig19](fig19_budget.png)" in md and "(budget_recovery.csv)" in md
    table = list(csv.DictReader(open(tmp_path / "budget.csv")))
    assert len(table) == 5 and table[0]["variant"] == "synthetic"
    assert len(list(csv.DictReader(open(tmp_path / "budget_recovery.csv")))) == 7


def _last_two(high_a: int, high_b: int, n: int = 100) -> Budget:
    """A J=n dictionary whose first ``high_a`` features are high-MCS at budget 100 and first ``high_b`` at 200."""
    budget = Budget("")
    for seen, k in ((100, high_a), (200, high_b)):
        budget.mcs[(n, 0, seen, SAME)] = np.where(np.arange(n) < k, 0.9, 0.2)
        budget.mcs[(n, 0, seen, FINAL)] = budget.mcs[(n, 0, seen, SAME)]
    return budget


def _finding(budget: Budget) -> str:
    res = type("R", (), {"featured": 100, "seeds": [0], "reference": 800, "config": AnalysisConfig(n_boot=500)})()
    ex = VariantMeasures("", {})
    ex.budget = budget
    budget.last_step = last_step(budget, res)
    return training_budget(report_input(res, ex))


def test_the_budget_finding_follows_the_paired_interval():
    rising = _finding(_last_two(50, 80))
    assert rising.startswith(
        "Along the training budget, the high-MCS fraction of J=100 against J=800 at the same budget was still rising "
        "between 100 and 200 activations seen (final): by +30.0 points ["
    )
    assert rising.endswith("(95% paired bootstrap interval over features), from 50.0% to 80.0%.")
    lo, hi = (float(x) for x in re.search(r"\[\+?(-?[\d.]+), \+?(-?[\d.]+)\]", rising).groups())
    assert 0 < lo < 30 < hi
    assert "was still falling between 100 and 200 activations seen (final): by -30.0 points" in _finding(
        _last_two(50, 20)
    )
    same = _finding(_last_two(50, 50))
    assert same == (
        "Along the training budget, no change in the high-MCS fraction of J=100 against J=800 at the same budget was "
        "detected between 100 and 200 activations seen (final) at this resolution: +0.0 points [+0.0, +0.0] (95% "
        "paired bootstrap interval over features), from 50.0% to 50.0%."
    )
    one = _last_two(50, 50)
    del one.mcs[(100, 0, 100, SAME)]  # one budget against the same-budget reference: nothing to compare
    assert _finding(one) is None


def test_the_report_has_the_budget_section_when_snapshots_exist(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    snaps = tmp_path / "snaps"
    for J in (4, 8):
        dec = torch.tensor(np.random.default_rng(J).normal(size=(16, J)), dtype=torch.float32)
        dec = dec / dec.norm(dim=0)
        metas = write_snapshots(snaps / str(J), [(1, 128, dec, np.ones(J)), (2, 256, dec, np.zeros(J))])
        training = {"converged": True, "activations_seen": 512, "snapshots": metas}
        files = {"snapshots.safetensors": snaps / str(J) / "snapshots.safetensors"}
        save_dict(store, J, 0, decoder=dec, extra={"training": training, "steps": 4}, files=files)
    for J in (4, 8):
        save_dict(store, J, 0, variant="untrained")  # a control without snapshots
    out = tmp_path / "analysis"
    cfg = AnalysisConfig(n_random=1, n_boot=50)
    text = run(AnalyzeJob(cfg, SourceConfig(), LoggerConfig(kind="none"), Paths(tmp_path), out)).read_text()
    assert "### Training budget" in text and "(fig19_budget.png)" in text and (out / "fig19_budget.png").is_file()
    table = list(csv.DictReader(open(out / "budget.csv")))
    assert {(r["activations_seen"], r["reference_state"]) for r in table} == {
        (s, ref) for s in ("128", "256", "512") for ref in (SAME, FINAL)
    }
    assert "Along the training budget, no change in the high-MCS fraction of J=4" in text  # 256 and 512: same decoder
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (out / link).is_file(), link


def test_a_final_state_training_snapshotted_is_the_last_point_and_counts_on_the_eval_sample(tmp_path):
    """Training snapshots the final state too: it is the last point once (not again from the dictionary), and its
    dead fraction counts the same 4096 evaluation rows as the earlier points, not the dictionary's 5000."""
    from sae_sweep.analysis.measures.budget import states  # noqa: PLC0415

    final = cols(E[0], HALF)
    d = make(
        tmp_path, 2, 0, final, 400, [(100, 100, cols(E[0], E[1]), [0, 5]), (400, 400, final, [2, 0])], counts=[7, 7]
    )  # alive on all 5000 held-out rows, the second feature silent on the 4096 of the sample
    got = states(d)
    assert [(st.activations_seen, st.final, st.dead_on, st.dead_rows) for st in got] == [
        (100, False, "eval sample", 4096),
        (400, True, "eval sample", 4096),
    ]
    assert got[-1].fired.tolist() == [2, 0] and np.array_equal(got[-1].rows, final.T.numpy())
