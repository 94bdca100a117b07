"""The analysis beyond the note (measures: features, seeds, controls, ground truth; the report's sections and their
Findings) on small dictionaries made by hand."""

import csv
import dataclasses
import re
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from sae_sweep import ConfigError
from sae_sweep.analysis.collect import SourceConfig, collect_local, collect_local_variants
from sae_sweep.analysis.job import AnalyzeJob, run
from sae_sweep.analysis.measures.controls import control_rows
from sae_sweep.analysis.measures.features import FeatureTable, feature_table, liveness_row, movement_row
from sae_sweep.analysis.measures.ground_truth import ground_truth_rows
from sae_sweep.analysis.measures.pairwise import compute
from sae_sweep.analysis.measures.seeds import seed_spread
from sae_sweep.analysis.measures.variant import VariantMeasures, measure_variant
from sae_sweep.analysis.report.controls import controls
from sae_sweep.analysis.report.error_bars import low_mode_vs_random
from sae_sweep.analysis.report.ground_truth import ground_truth
from sae_sweep.analysis.report.liveness import liveness
from sae_sweep.analysis.report.split import split
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.store import ArtifactStore, Paths
from sae_sweep.tracking import LoggerConfig
from sae_sweep.truth import SyntheticConfig, true_features

from ..conftest import save_dict
from .helpers import report_input


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(tmp_path / "store")


def unit_columns(m: np.ndarray) -> torch.Tensor:
    return torch.tensor(m / np.linalg.norm(m, axis=0), dtype=torch.float32)


def test_variants_are_collected_apart_and_the_plain_one_is_main(store):
    save_dict(store, 8, 0)
    save_dict(store, 8, 0, variant="untrained")
    save_dict(store, 16, 0, variant="l1-0.0003")
    found = collect_local_variants(store.root, 2)
    assert sorted(found) == ["", "l1-0.0003", "untrained"]
    assert list(found["untrained"]) == [(8, 0)] and list(found["l1-0.0003"]) == [(16, 0)]
    assert collect_local(store.root, 2)[(8, 0)].name == "sae-L2-J8-s0"
    assert collect_local(store.root, 2, variant="untrained")[(8, 0)].name == "sae-L2-J8-s0-untrained"
    with pytest.raises(ConfigError, match=r"analysis.variant='resample'.*found variants '', 'l1-0.0003', 'untrained'"):
        collect_local(store.root, 2, variant="resample")


def test_without_the_plain_variant_the_only_one_is_main_or_the_user_picks(store):
    save_dict(store, 8, 0, variant="synthetic")
    assert collect_local(store.root, 2)[(8, 0)].name == "sae-L2-J8-s0-synthetic"
    save_dict(store, 8, 0, variant="untrained")
    with pytest.raises(ConfigError, match=r"several variants \('synthetic', 'untrained'\).*analysis.variant="):
        collect_local(store.root, 2)


def test_feature_table_exact(store):
    # d_in 4. Dictionary: e0, e1, e2, (e0+e1)/sqrt2. Reference: e0, e1, e3 live, e2 dead.
    small = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=float)
    save_dict(store, 4, 0, d_in=4, decoder=unit_columns(small), counts=np.array([0, 5, 10, 20]))
    ref = np.eye(4)[:, [0, 1, 3, 2]]
    save_dict(
        store, 8, 0, d_in=4, decoder=unit_columns(np.concatenate([ref, ref], 1)), counts=np.array([1, 1, 1, 0] * 2)
    )
    d = collect_local(store.root, 2)
    a = d[(4, 0)]
    # encoder rows: set by hand; the init decoder is whatever SparseAutoencoder drew (kept in the file)
    a.tensors["encoder.weight"] = torch.tensor(
        [[1, 0, 0, 0], [-1, 0, 0, 0], [0, 0, 2, 0], [0, 1, 0, 0]], dtype=torch.float32
    )
    a.config = dataclasses.replace(a.config, harvest={"n_val_tokens": 40})
    cfg = AnalysisConfig()
    t = feature_table(a, d[(8, 0)], np.array([1.0, 1.0, 0.0, 0.7]), cfg)
    np.testing.assert_allclose(t.enc_dec_cos, [1, 0, 1, 1 / np.sqrt(2)], atol=1e-6)
    np.testing.assert_allclose(t.firing, [0, 0.125, 0.25, 0.5])
    np.testing.assert_allclose(t.mcs_live_ref, [1, 1, 0, 1 / np.sqrt(2)], atol=1e-6)  # e2 is only in dead columns
    init = a.tensors["decoder_init"].numpy()
    dec = a.decoder.numpy()
    expected = (init * dec).sum(0) / np.linalg.norm(init, axis=0) / np.linalg.norm(dec, axis=0)
    np.testing.assert_allclose(t.init_cos, expected, atol=1e-6)


def table(mcs, firing, init_cos=None, live=None) -> FeatureTable:
    mcs = np.asarray(mcs, dtype=float)
    return FeatureTable(
        mcs=mcs,
        mcs_live_ref=mcs if live is None else np.asarray(live, dtype=float),
        firing=np.asarray(firing, dtype=float),
        enc_dec_cos=np.linspace(-1, 1, mcs.size),
        init_cos=np.zeros(mcs.size) if init_cos is None else np.asarray(init_cos, dtype=float),
    )


def test_liveness_row_exact():
    # 6 features: low = the first four (MCS < 0.5); of them two dead, one live below q=0.4, one live above.
    t = table([0.2, 0.3, 0.35, 0.45, 0.9, 0.95], [0, 0, 0.01, 0.1, 0.0, 0.001], live=[0.2, 0.6, 0.6, 0.6, 0.9, 0.3])
    r = liveness_row(64, 1, t, AnalysisConfig(threshold=0.5), q=0.4)
    assert (r["dict_size"], r["seed"], r["n_low"]) == (64, 1, 4)
    assert r["low_dead_fraction"] == 0.5 and r["low_live_null_fraction"] == 0.25
    assert r["high_dead_fraction"] == 0.5
    assert r["median_log10_freq_low"] == pytest.approx(-1.5)
    assert r["high_fraction"] == pytest.approx(2 / 6) and r["high_fraction_live_ref"] == pytest.approx(4 / 6)


def test_movement_row_exact():
    t = table([0.1, 0.2, 0.3, 0.9], [1, 1, 1, 1], init_cos=[1.0, 0.995, 0.5, 0.999])
    r = movement_row(8, 0, t, AnalysisConfig(threshold=0.5, stay_cosine=0.99))
    assert (r["n_low"], r["low_stayed"]) == (3, 2)
    assert r["low_stayed_fraction"] == pytest.approx(2 / 3) and r["high_stayed_fraction"] == 1.0
    assert r["median_init_cos_low"] == pytest.approx(0.995)


def test_seed_spread_exact():
    split = [
        {"dict_size": 8, "seed": 0, "high_fraction": 0.2, "high_null_fraction": 0.5, "mixture_n_real": 3.0},
        {"dict_size": 8, "seed": 1, "high_fraction": 0.4, "high_null_fraction": 0.5, "mixture_n_real": 5.0},
    ]
    rows = {r["metric"]: r for r in seed_spread({"split": split})}
    assert rows["high_fraction"]["mean"] == pytest.approx(0.3)
    assert rows["high_fraction"]["range"] == pytest.approx(0.2)
    assert rows["high_fraction"]["sd"] is None  # two seeds: |a - b| / sqrt(2) is the range restated, not an sd
    assert rows["high_null_fraction"]["range"] == 0.0 and rows["mixture_n_real"]["max"] == 5.0
    third = {"dict_size": 8, "seed": 2, "high_fraction": 0.9, "high_null_fraction": 0.5, "mixture_n_real": 4.0}
    rows = {r["metric"]: r for r in seed_spread({"split": [*split, third]})}
    assert rows["high_fraction"]["sd"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))


def planted(store, n_true=8, d_in=16, sizes=(4, 8, 16, 32), seed=0, variant="synthetic", synthetic=None):
    """A size-J dictionary holds min(J, n_true) true features, then random directions. True features: the first
    n_true basis vectors, or those of a SyntheticConfig (recorded in config.json as the synthetic sweep does)."""
    rng = np.random.default_rng(seed)
    true = np.eye(d_in)[:n_true] if synthetic is None else true_features(synthetic)
    extra = {} if synthetic is None else {"synthetic": asdict(synthetic)}
    for J in sizes:
        k = min(J, len(true))
        cols = np.concatenate([true[:k].T, rng.normal(size=(d_in, J - k))], axis=1)
        save_dict(store, J, seed, d_in=d_in, decoder=unit_columns(cols), variant=variant, extra=extra)
    return true


def test_ground_truth_rows_exact(store):
    true = planted(store)
    dicts = collect_local(store.root, 2)
    res = compute(dicts, AnalysisConfig(n_random=2))
    rows = {r["dict_size"]: r for r in ground_truth_rows(res, dicts, true, AnalysisConfig(), {})}
    assert rows[4]["recovered_fraction"] == 0.5 and rows[4]["matched_fraction"] == 1.0
    assert rows[8]["recovered_fraction"] == 1.0 and rows[8]["matched_fraction"] == 1.0
    assert rows[16]["recovered_fraction"] == 1.0 and rows[16]["matched_fraction"] == 0.5
    assert rows[32]["matched_fraction"] == 0.25 and rows[32]["low_fraction"] is None  # the reference itself
    assert rows[4]["low_fraction"] == 0.0  # its 4 true features are all in the reference


def test_ground_truth_finding_describes_where_the_low_mode_is_and_claims_no_cause():
    ex = VariantMeasures("synthetic", {})
    base = {"seed": 0, "n_true": 8, "cosine": 0.9, "threshold": 0.5, "matched_fraction": 1.0, "mixture_n_real": None}
    ex.ground_truth = [
        {**base, "dict_size": 4, "recovered_fraction": 0.5, "low_vs_truth_fraction": 0.0, "low_fraction": 0.0},
        {**base, "dict_size": 8, "recovered_fraction": 1.0, "low_vs_truth_fraction": 0.05, "low_fraction": 0.05},
        {**base, "dict_size": 16, "recovered_fraction": 1.0, "low_vs_truth_fraction": 0.5, "low_fraction": None},
    ]
    text = ground_truth(report_input(ex=ex))
    assert "the low-MCS mode holds 10.0% or more of the dictionary at J=16 (2x the true count)" in text
    assert "once" not in text and "exceeds" not in text  # no causal clause: nothing in code established one
    assert "against the largest dictionary, as the note does, it holds under 10.0% of every dictionary" in text
    assert "recovered at MCS > 0.9: J=4: 50.0%, J=8: 100.0%, J=16: 100.0%" in text
    ex.ground_truth[1]["low_vs_truth_fraction"] = 0.1
    assert "at J=8 (1x the true count), J=16 (2x the true count)" in ground_truth(report_input(ex=ex))
    ex.ground_truth[0]["low_fraction"] = 0.3
    assert "as the note does, it holds 10.0% or more of the dictionary at J=4 (0.5x the true count)" in ground_truth(
        report_input(ex=ex)
    )
    ex.ground_truth[1]["recovered_fraction"] = 0.8
    assert "J=8: 80.0%" in ground_truth(report_input(ex=ex))


def test_control_rows_and_their_finding(store):
    for variant in ("", "untrained"):
        planted(store, variant=variant)
    found = collect_local_variants(store.root, 2)
    cfg = AnalysisConfig(n_random=2)
    table = []
    results = {}
    for variant, dicts in found.items():
        results[variant] = compute(dicts, cfg)
        table += control_rows(variant, results[variant], dicts)
    assert {r["variant"] for r in table} == {"(note)", "untrained"}
    row = next(r for r in table if r["variant"] == "(note)" and r["dict_size"] == 4)
    assert (
        row["high_fraction"] == 1.0 and row["reference"] == 32 and row["low_dead_fraction"] != row["low_dead_fraction"]
    )
    assert (row["n"], row["high"], row["data"]) == (4, 4, "activations")
    assert row["gpt_val_loss"] == 4.25  # the GPT's quality, read from the dictionary's config.json
    res = results[""]
    text = controls(report_input(res, controls=table))
    assert "untrained: 75.0% high-MCS at J=16 against J=32, the main run 75.0% at J=16 against J=32: no difference" in (
        text
    )
    for r in table:
        if r["variant"] == "untrained":
            r["high"], r["high_fraction"] = 0, 0.0
    assert "untrained: 0.0% high-MCS at J=16 against J=32, the main run 75.0% at J=16 against J=32: lower by 75.0" in (
        controls(report_input(res, controls=table))
    )
    for r in table:  # a control on another GPT says how good that GPT was
        if r["variant"] == "untrained":
            r["gpt_val_loss"] = 7.5
    assert "untrained (its GPT's validation loss 7.50 against 4.25): 0.0% high-MCS" in controls(
        report_input(res, controls=table)
    )
    for r in table:  # a control on other data (synthetic) is not set beside the main run
        if r["variant"] == "untrained":
            r["data"] = "synthetic"
    assert controls(report_input(res, controls=table)) is None


def test_liveness_finding_reports_rarity_from_the_row():
    res = type("R", (), {"featured": 8, "seeds": [0], "config": AnalysisConfig()})()
    ex = VariantMeasures("", {})
    row = {"dict_size": 8, "seed": 0, "n_low": 10, "low_dead_fraction": 0.1, "low_live_null_fraction": 0.7}
    row |= {"high_fraction": 0.5, "high_fraction_live_ref": 0.6, "median_log10_freq_low": -4.0}
    row |= {"median_log10_freq_high": -1.0, "enc_dec_cos_low": 0.95, "enc_dec_cos_high": 0.4}
    ex.liveness = [row]
    text = liveness(report_input(res, ex))
    assert "10.0% never fire" in text and "70.0% fire but score below" in text and "most are alive but random" in text
    assert "fire 1000 times less often than high-MCS ones" in text and "median cosine of 0.95" in text
    row["median_log10_freq_low"] = -1.1
    assert "fire about as often as high-MCS ones" in liveness(report_input(res, ex))


def test_low_mode_verdict_follows_the_permutation_tests():
    res = type("R", (), {"featured": 8, "seeds": [0], "reference": 32, "config": AnalysisConfig()})()
    ex = VariantMeasures("", {})
    row = {"dict_size": 8, "seed": 0, "n_learned": 5, "n_null": 6}
    ex.low_tests = [
        {**row, "null": "isotropic", "emd": 0.05, "p": 0.001},
        {**row, "null": "learned_reference", "emd": 0.01, "p": 0.4},
    ]
    ex.emd_ci = [  # the largest random-random EMD is quoted, not the row with the widest interval
        {"dict_size": 8, "a": "rand1", "b": "rand2", "emd": 0.02, "lo": 0.005, "hi": 0.03},
        {"dict_size": 8, "a": "rand1", "b": "rand3", "emd": 0.01, "lo": 0.001, "hi": 0.09},
    ]
    text = low_mode_vs_random(report_input(res, ex))
    assert "W1 between the learned low mode and Rand 1 is 0.0500 (permutation p = 0.001)" in text
    assert "between random sets it reaches 0.0200 (rand1 vs rand2)" in text
    assert "differs from the isotropic null at the 0.05 level, but no difference was detected from random" in text
    assert "the reference's geometry alone can produce the difference" in text
    ex.low_tests[1]["p"] = 0.01
    assert "and from random vectors scored against the learned J=32 reference" in low_mode_vs_random(
        report_input(res, ex)
    )
    ex.low_tests[0]["p"] = 0.2
    assert "no difference from the isotropic null was detected at the 0.05 level" in low_mode_vs_random(
        report_input(res, ex)
    )


@pytest.mark.slow  # a whole analysis (in process or a subprocess): out of the inner loop
def test_findings_change_when_the_numbers_change(store, tmp_path):
    planted(store, variant="", seed=0)
    job = AnalyzeJob(
        AnalysisConfig(n_random=2, n_boot=200),
        SourceConfig(),
        LoggerConfig(kind="none"),
        Paths(tmp_path),
        tmp_path / "a",
    )
    first = _findings_section(run(job).read_text())
    # Replace the featured dictionary (J=16) by random directions: the numbers move, so must the findings.
    save_dict(store, 16, 0, d_in=16, decoder=unit_columns(np.random.default_rng(5).normal(size=(16, 16))))
    second = _findings_section(run(replace(job, out_dir=tmp_path / "b")).read_text())
    assert first != second
    assert first.count("\n- ") >= 4 and second.count("\n- ") >= 4


def _findings_section(text: str) -> str:
    return re.search(r"## Findings\n(.*?)\n## ", text, re.S).group(1)


@pytest.mark.slow  # a whole analysis (in process or a subprocess): out of the inner loop
def test_report_has_every_new_section_and_links_exist(store, tmp_path):
    planted(store, variant="")
    planted(store, variant="untrained", seed=0)
    planted(store, variant="synthetic", synthetic=SyntheticConfig(n_features=8, d_in=16))
    out = tmp_path / "analysis"
    job = AnalyzeJob(
        AnalysisConfig(n_random=2, n_boot=100), SourceConfig(), LoggerConfig(kind="none"), Paths(tmp_path), out
    )
    text = run(job).read_text()
    for heading in (
        "## Findings",
        "### Liveness against MCS",
        "### Movement from initialisation",
        "### Matching beyond max",
        "### A principled split",
        "### Error bars",
        "### Anisotropic nulls",
        "### Controls",
    ):
        assert heading in text, heading
    for name in (
        "liveness.csv",
        "movement.csv",
        "matching.csv",
        "split.csv",
        "emd_ci.csv",
        "controls.csv",
        "low_mode_tests.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (out / link).is_file(), link
    for fig in ("fig13", "fig14", "fig15", "fig17", "fig18"):
        assert f"{fig}_" in text, fig
    truth = {r["dict_size"]: r for r in csv.DictReader(open(out / "ground_truth.csv"))}
    assert truth["4"]["recovered_fraction"] == "0.5" and truth["16"]["matched_fraction"] == "0.5"
    assert "### synthetic data (variant 'synthetic')" in text and "Synthetic data with 8 true features" in text
    assert truth["32"]["low_vs_truth_fraction"] == "0.75"  # 24 random columns of 32


def test_compute_extras_fits_and_intervals(store):
    planted(store, variant="")
    dicts = collect_local(store.root, 2)
    cfg = AnalysisConfig(n_random=2, n_boot=200)
    res = compute(dicts, cfg)
    ex = measure_variant(res, dicts, cfg)
    assert sorted(ex.features) == [(4, 0), (8, 0), (16, 0)]
    assert {r["dict_size"] for r in ex.emd_ci} == {4, 8, 16}
    for r in ex.emd_ci:  # the point value is the EMD matrix's entry; the interval is ordered
        names, matrix = res.emd[r["dict_size"]]
        assert r["emd"] == pytest.approx(matrix[names.index(r["a"]), names.index(r["b"])], abs=1e-12)
        assert r["lo"] <= r["hi"]
    assert any(r["lo"] < r["hi"] for r in ex.emd_ci)  # resampling did vary (a one-value sample cannot)
    for r in ex.split:
        assert r["high_lo"] <= r["high_fraction"] <= r["high_hi"]
    m = next(r for r in ex.matching if r["dict_size"] == 8)
    assert m["hungarian_mean"] == pytest.approx(1.0, abs=1e-6) and m["mmcs"] == pytest.approx(1.0, abs=1e-6)


def test_split_finding_gives_each_count_and_flags_a_null_fitted_at_its_bound():
    res = type("R", (), {"featured": 8, "seeds": [0], "config": AnalysisConfig()})()
    ex = VariantMeasures("", {})
    row = {"dict_size": 8, "seed": 0, "threshold": 0.5, "high_fraction": 0.5, "high_null_fraction": 0.6}
    row |= {"mixture_n_real": 4.0, "mixture_n_real_exact_null": 5.0, "n_above_null_quantile": 6}
    row |= {"mixture_null_shift": 0.01, "mixture_null_scale": 1.1}
    ex.split = [row]
    text = split(report_input(res, ex))
    assert "J=8: 4 (5, 6)" in text and "moved by +0.010 and scaled by 1.10. The estimate" in text
    row["mixture_null_scale"] = 1.5  # the largest scale allowed
    assert "scaled by 1.50 (at the edge of its allowed range" in split(report_input(res, ex))
