"""The match floor calibrated on a parametric bootstrap (measures/calibration.py): the floor chosen from a curve, the
bootstrap's generating process, the per-dictionary truth check, and one whole size calibrated on tiny data."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sae_sweep import ConfigError
from sae_sweep.analysis.measures.calibration import (
    FLOORS,
    UNKNOWN_BUDGET,
    Calibration,
    SizeCalibration,
    bootstrap_budget,
    calibrate_size,
    choose,
    chosen,
    load_calibration,
    save_calibration,
    train_on,
    train_pair,
    truth_model,
)
from sae_sweep.analysis.measures.inference import wilson_interval
from sae_sweep.analysis.measures.verdict_checks import replicable_rows
from sae_sweep.analysis.measures.verdicts import Atoms, Verdicts, verdicts
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary
from sae_sweep.train.sae import SAEConfig

from ..conftest import dictionary_config

CFG = AnalysisConfig(verdict_null="isotropic")


def test_the_floor_is_the_lowest_whose_precision_interval_reaches_the_target_and_its_recall_is_predicted():
    curve = [  # each bootstrap dictionary's real calls and right ones, and the replicable truth found (pooled)
        {"floor": 0.5, "called": [50, 50], "right": [40, 40], "found": 90, "replicable": 100},
        {"floor": 0.6, "called": [400, 400], "right": [399, 400], "found": 70, "replicable": 100},
        {"floor": 0.7, "called": [0, 0], "right": [0, 0], "found": 0, "replicable": 100},  # nothing called real
    ]
    row, reached = choose(curve, 0.95, 0.95)
    assert (row["floor"], reached, row["precision"]) == (0.6, True, 799 / 800)
    assert row["precision_lo"] == wilson_interval(399, 400, 0.95)[0]  # the smaller of the two lower ends
    # the recall one dictionary (50 of the 100 pooled features) will show: 70 of 100 found, predicted for 50 more
    lo, hi = row["recall"][1:]
    assert row["recall"][0] == 0.7 and (lo, hi) == (0.54, 0.84)  # scipy's beta-binomial; drawn by hand below
    law = np.random.default_rng(0).binomial(50, np.random.default_rng(1).beta(70.5, 30.5, 200_000)) / 50
    assert np.quantile(law, [0.025, 0.975]) == pytest.approx([lo, hi], abs=0.021)
    # 399 of 400 is 0.9975, but its interval reaches down to 0.986: not enough for 0.99; a floor calling nothing real
    # shows no precision either: none reaches it, and the highest floor is kept, said
    row, reached = choose(curve, 0.99, 0.95)
    assert (row["floor"], reached, row["recall"][0]) == (0.7, False, 0.0)
    # a kept calibration serves any target: the floor is chosen again from its curve
    c = SizeCalibration(8, "d", 8, 50, 1000, 1.0, False, None, None, None, None, curve)
    assert chosen(c, AnalysisConfig(calibration_precision=0.9)).floor == 0.6
    assert chosen(c, AnalysisConfig(calibration_precision=0.5)).floor == 0.5


def test_calibration_settings_out_of_range_are_refused():
    with pytest.raises(ConfigError, match="calibration_precision must be in"):
        AnalysisConfig(calibration_precision=1.0)
    with pytest.raises(ConfigError, match="calibration_activations must be a positive integer"):
        AnalysisConfig(calibration_activations=0)


def _dictionary(decoder: np.ndarray, bias: np.ndarray, **config) -> Dictionary:
    """A dictionary whose encoder is its decoder's transpose: ``decoder`` (d_in, J) with unit columns."""
    dec = torch.tensor(decoder, dtype=torch.float32)
    tensors = {"decoder": dec, "encoder.weight": dec.T.contiguous(), "encoder.bias": torch.tensor(bias).float()}
    d_in, J = decoder.shape
    cfg = dictionary_config(f"sae-L2-J{J}-s0", d_in=d_in, dict_size=J, **config)
    return Dictionary(cfg.name, dec, tensors, cfg, None, Path("."))


def test_the_truth_model_reconstructs_the_held_out_rows_and_keeps_the_atoms_that_fire():
    # atoms e1, e2 and a third that never fires (bias -10); the rows are exact non-negative combinations of e1, e2
    s = 2**-0.5
    d = _dictionary(np.array([[1.0, 0.0, s], [0.0, 1.0, s]]), np.array([0.0, 0.0, -10.0]))
    val = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 0.5]], dtype=np.float16)
    data = truth_model(d, val)
    torch.testing.assert_close(data.recon, torch.tensor(val, dtype=torch.float32))  # residual 0
    assert data.truth.tolist() == [[1.0, 0.0], [0.0, 1.0]]  # the silent third atom is no true feature
    assert torch.equal(data.mean, torch.zeros(2)) and float(data.chol.abs().max()) < 1e-4
    # the bootstrap draws held-out reconstructions plus the residual's law: here, the rows themselves
    rows = data.rows(1000, torch.Generator().manual_seed(0))
    assert {tuple(r) for r in rows.round(decimals=3).tolist()} == {tuple(map(float, r)) for r in val}


def test_bootstrap_rows_are_a_reconstruction_plus_an_independent_draw_of_the_residuals_law():
    # held-out rows = (2, 0) + a residual: relu clips the second coordinate's negative part, which stays residual
    rng = np.random.default_rng(0)
    resid = rng.multivariate_normal([0.1, -0.2], [[0.04, 0.01], [0.01, 0.09]], size=50_000)
    val = (np.array([2.0, 0.0]) + resid).astype(np.float32)
    data = truth_model(_dictionary(np.eye(2), np.zeros(2)), val)
    recon = data.recon.double().numpy()
    left = val - recon
    rows = data.rows(200_000, torch.Generator().manual_seed(1)).double().numpy()
    # E[x*] = E[recon] + E[r], Cov[x*] = Cov[recon] + Cov[r]: the residual is drawn apart from the codes
    assert rows.mean(axis=0) == pytest.approx(recon.mean(axis=0) + left.mean(axis=0), abs=0.003)
    assert np.cov(rows.T) == pytest.approx(np.cov(recon.T) + np.cov(left.T), abs=0.003)


def _verdict_table(names: list[str], calls: list[list[str]]) -> np.ndarray:
    t = np.zeros(sum(len(c) for c in calls), dtype=[("name", "U64"), ("verdict", "U16")])
    t["name"] = [n for n, c in zip(names, calls, strict=True) for _ in c]
    t["verdict"] = [v for c in calls for v in c]
    return t


def test_precision_and_recall_of_the_replicable_truth_per_dictionary_beside_the_estimate():
    e = np.eye(3, dtype=np.float32)
    mixed = (e[1] + e[2]) / np.sqrt(2)  # at cosine 0.71 to e2 and e3: no true feature
    atoms = {(2, 0): Atoms("A", np.stack([e[0], e[1]]), None), (2, 1): Atoms("B", np.stack([e[0], mixed]), None)}
    v = Verdicts("", ["isotropic"], "", floors={2: 0.9})
    v.table = _verdict_table(["A", "B"], [["real", "real"], ["unreplicated", "real"]])
    est = SizeCalibration(2, "A", 3, 1, 100, 0.9, True, 1.0, 0.75, 0.5, 1.0)
    rows = replicable_rows(v, atoms, e, CFG, {2: est})
    # replicable: e1 only (B holds no e2 or e3 within 0.9); A calls its e1 atom real, B does not
    assert [(r["name"], r["replicable"], r["found"], r["recall"], r["precision"]) for r in rows] == [
        ("A", 1, 1, 1.0, 1.0),
        ("B", 1, 0, 0.0, 0.0),
    ]
    assert [(r["match_floor"], r["estimated_recall"], r["inside"]) for r in rows] == [
        (0.9, 0.75, True),
        (0.9, 0.75, False),
    ]


def test_the_verdicts_use_each_sizes_calibrated_floor():
    # two seeds whose atoms meet at cosine 0.92: not found again at the fixed 0.95, found at a calibrated 0.9
    rng = np.random.default_rng(0)
    a = np.linalg.qr(rng.standard_normal((32, 8)))[0].T  # (8, 32) orthonormal
    other = np.linalg.qr(rng.standard_normal((32, 32)))[0].T[:8]
    other -= (other * a).sum(axis=1, keepdims=True) * a
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    b = 0.92 * a + np.sqrt(1 - 0.92**2) * other
    atoms = {(8, 0): Atoms("A", a.astype(np.float32), None), (8, 1): Atoms("B", b.astype(np.float32), None)}
    cfg = AnalysisConfig(verdict_null="isotropic", null_rows=512)
    assert (verdicts(atoms, cfg).table["verdict"] == "unreplicated").all()
    assert (verdicts(atoms, cfg, floors={8: 0.9}).table["verdict"] == "real").all()
    assert (verdicts(atoms, cfg, floors={16: 0.9}).table["verdict"] == "unreplicated").all()  # another size's


def test_a_whole_size_calibrated_on_clean_data_finds_its_features_and_is_kept_under_its_key(tmp_path):
    # 96 orthogonal true features in 128 dimensions, 2 active per row: the dictionary is the truth itself, so the
    # bootstrap SAEs learn the same 96 and the floor chosen calls them real (96 right calls of 96 put the precision's
    # interval above 0.95; 8 of 8 would not)
    rng = np.random.default_rng(0)
    J = 96
    truth = np.linalg.qr(rng.standard_normal((128, J)))[0]  # (128, J) orthonormal columns
    codes = np.zeros((8192, J))
    for row in codes:
        row[rng.choice(J, 2, replace=False)] = rng.exponential(1.0, 2)
    val = (codes @ truth.T + 0.01 * rng.standard_normal((8192, 128))).astype(np.float32)
    sae = SAEConfig(dict_size=J, l1_coeff=3e-3, lr=1e-2).to_dict()  # L0 ~2, as the data
    d = _dictionary(truth, np.zeros(J), sae=sae, training={"activations_seen": 200_000})
    cfg = AnalysisConfig(null_rows=512, calibration_activations=100_000)
    c = calibrate_size({(J, 0): d, (J, 1): d}, J, val, cfg)
    assert c.n_true == J and c.activations == 100_000 and len(c.curve) == len(FLOORS)
    assert c.reached and c.floor in FLOORS and c.precision_lo >= 0.95
    assert c.replicable >= 80 and c.recall >= 0.95  # most true features found by both bootstrap SAEs, and called real
    cal = Calibration("v", "k" * 64, {J: c}, "how")
    save_calibration(tmp_path, cal)
    assert load_calibration(tmp_path, "v", "k" * 64) == cal
    assert load_calibration(tmp_path, "v", "j" * 64) is None  # other inputs: not this calibration


def test_the_two_bootstrap_saes_trained_side_by_side_are_those_trained_one_after_the_other():
    # threads share torch's global state (its thread count, its default generator): each seed's SAE must still be a
    # function of its seed alone, bit for bit, and the process's thread count is restored after
    rng = np.random.default_rng(0)
    val = np.abs(rng.standard_normal((512, 16))).astype(np.float32)
    sae = SAEConfig(dict_size=32, l1_coeff=1e-3, batch_size=64).to_dict()
    d = _dictionary(np.linalg.qr(rng.standard_normal((16, 16)))[0][:, [*range(16)] * 2], np.zeros(32), sae=sae)
    data = truth_model(d, val)
    threads = torch.get_num_threads()
    side_by_side = train_pair(data, d, 6_400)
    assert torch.get_num_threads() == threads
    one_by_one = [train_on(data, d, 1_000 + s, 6_400) for s in (0, 1)]
    for (a, fa), (b, fb) in zip(side_by_side, one_by_one, strict=True):
        assert np.array_equal(a, b) and np.array_equal(fa, fb)
    assert not np.array_equal(side_by_side[0][0], side_by_side[1][0])  # two seeds, two SAEs


def test_where_no_floor_reached_the_target_the_finding_gives_the_fixed_floors_precision_on_the_bootstrap():
    from types import SimpleNamespace  # noqa: PLC0415

    from sae_sweep.analysis.report.calibration import estimates  # noqa: PLC0415
    from sae_sweep.analysis.report.section import ReportInput  # noqa: PLC0415

    def size(j: int, right: list[int], called: list[int]) -> SizeCalibration:
        curve = [{"floor": f, "called": called, "right": right, "found": 5, "replicable": 10} for f in (0.9, 0.95)]
        return chosen(SizeCalibration(j, "d", 20, 5, 1000, 1.0, False, None, None, None, None, curve), CFG)

    cal = Calibration("", "k", {8: size(8, [40, 38], [50, 50]), 16: size(16, [300, 300], [300, 300])}, "how")
    run = SimpleNamespace(measured=lambda f: cal, results=SimpleNamespace(config=CFG))
    text = estimates(ReportInput(run=run))
    # J=8: 78 of 100 right at 0.95, the highest floor kept (not reached); J=16 reached it and is not repeated
    assert "J=8: floor 0.95, recall 50.0%" in text and "(no floor reached the target precision)" in text
    lo, hi = wilson_interval(78, 100, CFG.level)
    assert f"J=8: 78 of 100 (78.0%, 95% interval [{lo:.1%}, {hi:.1%}])" in text
    assert "J=16: 600 of 600" not in text and text.count(" of 100 (") == 1


def test_each_bootstrap_sae_sees_as_many_activations_as_the_analysed_one_unless_capped():
    seen = _dictionary(np.eye(2), np.zeros(2), training={"activations_seen": 3_200_000})
    silent = _dictionary(np.eye(2), np.zeros(2), training={})  # trained elsewhere: its budget is not recorded
    assert bootstrap_budget(seen, AnalysisConfig()) == 3_200_000  # the run's own budget, by default
    assert bootstrap_budget(seen, AnalysisConfig(calibration_activations=1_000_000)) == 1_000_000  # a cap
    assert bootstrap_budget(seen, AnalysisConfig(calibration_activations=5_000_000)) == 3_200_000  # never more
    assert bootstrap_budget(silent, AnalysisConfig()) == UNKNOWN_BUDGET == 1_000_000
    assert bootstrap_budget(silent, AnalysisConfig(calibration_activations=64)) == 64
