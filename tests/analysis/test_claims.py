"""The note's three claims and the controls, decided in code: hand-made MCS values where the right verdict is known."""

import numpy as np
import pytest

from sae_sweep.analysis.measures.pairwise import Results, counts, size_steps
from sae_sweep.analysis.measures.variant import VariantMeasures
from sae_sweep.analysis.report.controls import controls
from sae_sweep.analysis.report.reproduction import claim_correlated, claim_counts, claim_low_mode
from sae_sweep.analysis.settings import AnalysisConfig

from .helpers import report_input


def results(sizes, reference, featured, seeds=(0,)) -> Results:
    return Results(AnalysisConfig(), 16, sorted({*sizes, reference}), list(seeds), reference, featured)


def mcs_with(n: int, high: int, seed: int = 0) -> np.ndarray:
    """n MCS values of which exactly ``high`` are >= 0.5 (the default threshold)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(0.8, 1.0, high), rng.uniform(0.2, 0.4, n - high)])


def with_counts(res: Results, high: dict[int, int], seed: int = 0) -> Results:
    for j, k in high.items():
        res.mcs[(j, seed, res.reference, seed)] = (mcs_with(j, k, j), np.zeros(j, dtype=int))
    return res


def test_claim_counts_reproduced_when_every_step_rises_in_count_and_falls_in_proportion():
    res = with_counts(results((256, 512, 1024), 2048, 512), {256: 240, 512: 400, 1024: 500})
    text = claim_counts(report_input(res))
    assert "reproduced for seed 0: high-MCS counts 240, 400, 500 (93.8%, 78.1%, 48.8%)" in text
    assert "not reproduced" not in text


def test_claim_counts_not_reproduced_names_the_step_that_fails():
    """400 -> 405 high-MCS features: the count's interval covers 0, so no rise is shown (the proportion falls)."""
    res = with_counts(results((256, 512, 1024), 2048, 512), {256: 240, 512: 400, 1024: 405})
    text = claim_counts(report_input(res))
    assert "not reproduced for seed 0" in text
    assert "the count does not rise detectably from J=512 to J=1024 (+5 [" in text
    assert "the proportion does not fall" not in text
    steps = size_steps(counts(res, 0), 0.95)
    assert steps[1]["count"][1] < 0 < steps[1]["count"][2] and steps[1]["proportion"][2] < 0
    res = with_counts(results((256, 512), 2048, 512), {256: 240, 512: 500})  # proportion rises from 93.8% to 97.7%
    assert "the proportion does not fall detectably from J=256 to J=512 (+3.9 points [" in claim_counts(
        report_input(res)
    )


def test_claim_correlated_needs_the_lower_end_of_the_interval_above_the_bound():
    res = results((256, 512, 1024), 2048, 256)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 1.0, 256)
    res.mcs[(256, 0, 512, 0)] = (x, None)
    res.mcs[(256, 0, 1024, 0)] = (x + rng.normal(0, 0.02, 256), None)
    assert "reproduced for seed 0 (r = 0.99" in claim_correlated(report_input(res))
    assert "against J=512 and J=1024" in claim_correlated(report_input(res))
    res.mcs[(256, 0, 1024, 0)] = (rng.uniform(0.2, 1.0, 256), None)  # unrelated: r near 0
    assert "not reproduced for seed 0" in claim_correlated(report_input(res))
    res.mcs[(256, 0, 1024, 0)] = (np.ones(256), None)  # constant: r is undefined, never "high"
    with pytest.warns(Warning):
        assert "not reproduced for seed 0 (r undefined" in claim_correlated(report_input(res))


def test_claim_low_mode_reproduced_only_when_no_difference_is_detected():
    res = results((8,), 32, 8, seeds=(0, 1))
    ex = VariantMeasures("", {})
    base = {"dict_size": 8, "null": "isotropic", "n_learned": 5, "n_null": 6, "emd": 0.01}
    ex.low_tests = [{**base, "seed": 0, "p": 0.3}, {**base, "seed": 1, "p": 0.001}]
    text = claim_low_mode(report_input(res, ex))
    assert (
        "reproduced for seed 0 (W1 0.0100, p = 0.3" in text
        and "not reproduced for seed 1 (W1 0.0100, p = 0.001" in text
    )


def control_row(variant, j, reference, high, n, data="activations"):
    return {
        "variant": variant,
        "dict_size": j,
        "seed": 0,
        "reference": reference,
        "data": data,
        "n": n,
        "high": high,
        "high_fraction": high / n,
        "gpt_val_loss": 4.0,
    }


def test_controls_are_compared_at_the_control_reference_size_not_the_main_one():
    """The main run scores J=1024 against 8192 (30% high) and against 2048 (60% high); a control with 55% high
    against its J=2048 is compared with the 60%, the like-for-like number."""
    res = results((1024, 2048), 8192, 1024)
    res.mcs[(1024, 0, 8192, 0)] = (mcs_with(1024, 307), None)
    res.mcs[(1024, 0, 2048, 0)] = (mcs_with(1024, 614), None)
    table = [control_row("(note)", 1024, 8192, 307, 1024), control_row("l1", 1024, 2048, 563, 1024)]
    text = controls(report_input(res, controls=table))
    assert "l1: 55.0% high-MCS at J=1024 against J=2048, the main run 60.0% at J=1024 against J=2048" in text
    assert "lower by 5.0 points" in text
    table[1]["high"], table[1]["high_fraction"] = 600, 600 / 1024  # 58.6% vs 60.0%: within the interval
    assert "no difference detected (-1.4 points [" in controls(report_input(res, controls=table))
    table.append(control_row("synthetic", 1024, 2048, 1000, 1024, data="synthetic"))  # other data: its own section
    assert "synthetic" not in controls(report_input(res, controls=table))


@pytest.mark.parametrize("missing", [True, False])
def test_controls_skip_a_reference_size_the_main_run_lacks(missing):
    res = results((1024,), 8192, 1024)
    res.mcs[(1024, 0, 8192, 0)] = (mcs_with(1024, 307), None)
    if not missing:
        res.mcs[(1024, 0, 4096, 0)] = (mcs_with(1024, 500), None)
    table = [control_row("(note)", 1024, 8192, 307, 1024), control_row("l1", 1024, 4096, 500, 1024)]
    assert (controls(report_input(res, controls=table)) is None) == missing
