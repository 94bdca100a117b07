"""Architectures side by side (measures/architectures.py, report/architectures.py): the two-modes verdict, the
cross-seed ordering, and the report's section on hand-made dictionaries."""

from __future__ import annotations

import numpy as np
import pytest

from sae_sweep.analysis.collect import SourceConfig
from sae_sweep.analysis.job import AnalyzeJob, run
from sae_sweep.analysis.measures.architectures import MIN_MODE, stability, two_modes
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.analysis.measures.nulls import random_dictionary
from sae_sweep.analysis.report.architectures import stability_finding
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.store import ArtifactStore, Paths
from sae_sweep.tracking import LoggerConfig
from sae_sweep.train.sae import SAEConfig

from ..conftest import save_dict
from .helpers import report_input


def _null_mcs(n: int, K: int, M: int, seed: int) -> np.ndarray:
    """MCS of n random vectors against M random ones in K dimensions: a sample of the exact null."""
    a, b = random_dictionary(n, K, seed), random_dictionary(M, K, seed + 1)
    return max_cosine_similarity(a, b, device="cpu")[0]


def test_two_modes_needs_a_null_like_mode_and_a_high_mode():
    K, M = 16, 256
    rng = np.random.default_rng(0)
    high = np.clip(rng.normal(0.95, 0.02, 400), 0, 0.999)
    both, why = two_modes(np.concatenate([_null_mcs(600, K, M, 1), high]), K, M, 0.5)
    assert both, why
    alone, why = two_modes(_null_mcs(1000, K, M, 3), K, M, 0.5)
    assert not alone and why == "BIC keeps the null alone"
    few_null, why = two_modes(np.concatenate([_null_mcs(10, K, M, 5), high]), K, M, 0.5)
    assert not few_null and "holds" in why  # one component under MIN_MODE
    assert MIN_MODE == 0.05


def finding(**tables) -> str:
    return stability_finding(report_input(**tables))


def _row(arch: str, j: int, shared: float, data: str = "activations") -> dict:
    return {"arch": arch, "data": data, "dict_size": j, "shared_fraction": shared}


def test_the_cross_seed_ordering_is_read_from_the_interval_of_the_difference():
    table = [_row("relu", 1000, 0.6), _row("topk", 1000, 0.3), _row("relu", 2000, 0.51), _row("topk", 2000, 0.50)]
    table += [_row("relu", 4000, 0.2), _row("topk", 4000, 0.4), _row("batchtopk", 4000, 0.9)]
    steps = {t["dict_size"]: t for t in stability(table, 0.95)}
    assert [steps[j]["more_stable"] for j in (1000, 2000, 4000)] == ["relu", "none", "topk"]
    assert steps[1000]["difference"] == pytest.approx(0.3) and steps[1000]["lo"] > 0
    assert "the ordering differs between sizes" in finding(stability=list(steps.values()))
    only = [steps[1000]]
    assert "ReLU + L1 is the more stable at every size compared, as Paulo & Belrose found" in finding(stability=only)
    assert "the opposite of Paulo & Belrose's ordering" in finding(stability=[steps[4000]])
    assert "no difference was detected at any size compared" in finding(stability=[steps[2000]])
    assert stability([_row("relu", 1000, 0.6)], 0.95) == []  # nothing to compare without TopK
    unequal = {**steps[1000], "relu_seen": 2_400_000, "topk_seen": 300_000}
    text = finding(stability=[unequal])
    assert "(trained on 2,400,000 and 300,000 activations: unequal budgets)" in text
    assert "does not separate training length from architecture" in text


def _plant(store: ArtifactStore, arch: str, variant: str, n_true: int = 8, d_in: int = 16, tag: str = "") -> None:
    """Sizes 8-32 on seeds 0 and 1: n_true shared unit features, then random directions."""
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        for J in (8, 16, 32):
            cols = np.concatenate([np.eye(d_in)[:, :n_true], rng.normal(size=(d_in, J - n_true))], axis=1)
            sae = SAEConfig(dict_size=J, seed=seed, arch=arch, tag=tag).to_dict()
            save_dict(store, J, seed, d_in=d_in, decoder=cols / np.linalg.norm(cols, axis=0), variant=variant,
                      extra={"sae": sae})  # fmt: skip


@pytest.mark.slow  # a whole analysis (in process or a subprocess): out of the inner loop
def test_report_sets_the_architectures_side_by_side(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    _plant(store, "relu", "")
    _plant(store, "topk", "topk-k20")
    out = tmp_path / "analysis"
    job = AnalyzeJob(AnalysisConfig(n_random=2, n_boot=50, n_perm=50), SourceConfig(), LoggerConfig(kind="none"),
                     Paths(tmp_path), out)  # fmt: skip
    text = run(job).read_text()
    assert "### Architectures" in text and "fig20_architectures.png" in text
    assert (out / "fig20_architectures.png").stat().st_size > 0
    rows = (out / "architectures.csv").read_text().splitlines()
    assert rows[0].startswith("arch,variant,data,tag,dict_size,reference,seed,activations_seen,converged,l0,fvu,high_")
    assert sorted(r.split(",")[0] for r in rows[1:]) == ["relu"] * 3 + ["topk"] * 3  # 8, 16 against 32, and 32
    reference = [r.split(",") for r in rows[1:] if r.split(",")[4] == "32"]
    head = rows[0].split(",")
    assert len(reference) == 2 and all(r[head.index("high_fraction")] == "" for r in reference)  # no MCS vs itself
    # Both architectures share the same 8 features across seeds, at every size: no difference to detect.
    steps = (out / "architecture_stability.csv").read_text().splitlines()
    assert len(steps) == 4 and all(s.endswith(",none,256,256") for s in steps[1:])  # equal budgets, 8 ... 32
    assert steps[0].startswith("data,tag,dict_size,difference")
    findings = (out / "findings.md").read_text()
    assert "Architectures side by side" in findings and "relu on activations" in findings
    assert "topk on activations" in findings and "no difference was detected at any size compared" in findings


def test_no_architectures_rows_without_another_architecture(tmp_path):
    """Only ReLU runs: architecture_table has nothing to set side by side, so the report has no such section."""
    from sae_sweep.analysis.collect import collect_local  # noqa: PLC0415
    from sae_sweep.analysis.measures.architectures import architecture_table  # noqa: PLC0415
    from sae_sweep.analysis.measures.pairwise import compute  # noqa: PLC0415

    store = ArtifactStore(tmp_path / "store")
    _plant(store, "relu", "")
    dicts = collect_local(store.root, 2)
    cfg = AnalysisConfig(n_random=2, n_boot=50, n_perm=50)
    assert architecture_table({"": (compute(dicts, cfg), dicts, None, None)}, [""], cfg) == []


def test_a_tagged_group_is_set_beside_the_relu_run_of_its_tag(tmp_path):
    """experiment=architectures' one-pass arms (sae.tag=onepass) meet the one-pass ReLU arm, not the main run nor a
    tagged control; untagged ones meet the main run; the stability table keeps the groups apart."""
    from sae_sweep.analysis.collect import collect_local_variants  # noqa: PLC0415
    from sae_sweep.analysis.measures.architectures import architecture_table  # noqa: PLC0415
    from sae_sweep.analysis.measures.pairwise import compute  # noqa: PLC0415

    store = ArtifactStore(tmp_path / "store")
    _plant(store, "relu", "")
    _plant(store, "relu", "onepass", tag="onepass")
    _plant(store, "relu", "untrained-onepass", tag="onepass")  # a control under the tag: longer name, not chosen
    _plant(store, "topk", "topk-k20-onepass", tag="onepass")
    _plant(store, "topk", "topk-k20")
    cfg = AnalysisConfig(n_random=2, n_boot=50, n_perm=50)
    runs = {v: (compute(d, cfg), d, None, None) for v, d in collect_local_variants(store.root, 2).items()}
    table = architecture_table(runs, [""], cfg)
    got = [(r["tag"], r["variant"], r["dict_size"]) for r in table]
    assert got == [(t, v, j) for t, v in [("", "(note)"), ("", "topk-k20"), ("onepass", "onepass"),
                                          ("onepass", "topk-k20-onepass")] for j in (8, 16, 32)]  # fmt: skip
    steps = stability(table, 0.95)
    assert [(t["tag"], t["dict_size"]) for t in steps] == [(tag, j) for tag in ("", "onepass") for j in (8, 16, 32)]
    assert "J=8 (activations, sae.tag onepass)" in finding(stability=steps)
