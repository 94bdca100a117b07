"""analyze.py's collection, computation and report, on small dictionaries made by hand."""

import csv
import json
import re
import shutil
import warnings

import numpy as np
import pytest
import torch

from sae_sweep import DataError
from sae_sweep.analysis.collect import SourceConfig, collect_local, collect_wandb
from sae_sweep.analysis.job import AnalyzeJob, _sizes_of, run
from sae_sweep.analysis.measures.pairwise import compute, counts
from sae_sweep.analysis.partial import best_reference, usable
from sae_sweep.analysis.report.reproduction import training
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import load_dictionary
from sae_sweep.store import ArtifactStore, Paths
from sae_sweep.tracking import LoggerConfig

from ..conftest import save_dict
from .helpers import report_input


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(tmp_path / "store")


def test_nothing_found_names_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=rf"no layer-2 dictionaries found in {re.escape(str(tmp_path))}"):
        collect_local(tmp_path, layer=2)


def test_different_widths_name_both(store):
    save_dict(store, 32, 0, d_in=16)
    save_dict(store, 64, 0, d_in=8)
    with pytest.raises(DataError, match=r"different widths: .*sae-L2-J\d+-s0 \(d_in=16\) and .* \(d_in=8\)"):
        collect_local(store.root, layer=2)


def test_latest_version_wins_with_a_warning(store):
    save_dict(store, 32, 0)
    newer = save_dict(store, 32, 0, decoder=torch.eye(16, 32))
    with pytest.warns(UserWarning, match=r"sae-L2-J32-s0 has 2 versions; using the latest, v1"):
        dicts = collect_local(store.root, layer=2)
    assert dicts[(32, 0)].path == newer.path and torch.equal(dicts[(32, 0)].decoder, torch.eye(16, 32))


def test_corrupt_dictionary_is_named_and_refused(store):
    art = save_dict(store, 32, 0)
    with open(art.path / "sae.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(DataError, match=r"sae-L2-J32-s0/v0/sae\.safetensors does not match the sha256"):
        collect_local(store.root, layer=2)


def test_other_layers_are_left_out(store):
    save_dict(store, 32, 0, layer=3)
    save_dict(store, 64, 0, layer=2)
    assert list(collect_local(store.root, layer=2)) == [(64, 0)]


def test_compute_exact_on_planted_features(store):
    # Reference: the 16 standard basis vectors plus 16 others. The small dictionary holds 4 of the basis vectors
    # (MCS exactly 1) and 4 vectors orthogonal to all of the reference's... impossible in 16-d, so instead 4 copies
    # of one random direction, whose MCS is below 1.
    rng = np.random.default_rng(0)
    ref = np.concatenate([np.eye(16), rng.normal(size=(16, 16))]).T  # (d_in, 32)
    small = np.concatenate([np.eye(16)[:, :4], np.tile(rng.normal(size=(16, 1)), (1, 4))], axis=1)
    save_dict(store, 32, 0, decoder=torch.tensor(ref / np.linalg.norm(ref, axis=0), dtype=torch.float32))
    save_dict(store, 8, 0, decoder=torch.tensor(small / np.linalg.norm(small, axis=0), dtype=torch.float32))
    res = compute(collect_local(store.root, 2), AnalysisConfig(n_random=3, threshold=0.999, cutoff=0.999))
    values, indices = res.mcs[(8, 0, 32, 0)]
    np.testing.assert_allclose(values[:4], 1.0, atol=1e-6)
    assert indices[:4].tolist() == [0, 1, 2, 3]
    assert np.all(values[4:] < 0.999) and np.allclose(values[4:], values[4])
    (row,) = counts(res, 0)
    assert (row["high"], row["low"], row["n"]) == (4, 4, 8)
    names, matrix = res.emd[8]
    assert names == ["learned", "rand1", "rand2", "rand3", "alt params"]
    np.testing.assert_allclose(matrix, matrix.T) and np.testing.assert_array_equal(np.diag(matrix), 0)
    assert [r.shape for r in res.random[8]] == [(8,)] * 3 and res.alt[8].shape == (8,)
    assert res.reference == 32 and res.null_mean[32] < res.null_mean[64]


def test_pairs_within_and_across_seeds(store):
    for J in (8, 16, 32):
        for s in (0, 1):
            save_dict(store, J, s)
    res = compute(collect_local(store.root, 2), AnalysisConfig(n_random=2))
    expected = {(a, sa, b, sb) for a in (8, 16, 32) for b in (8, 16, 32) if a < b for sa in (0, 1) for sb in (0, 1)}
    assert set(res.mcs) == expected  # 3 size pairs x 4 seed pairs
    assert res.emd[8][0][:2] == ["learned s0", "learned s1"]


def test_single_size_skips_pairwise_parts_with_a_warning(store, tmp_path):
    save_dict(store, 32, 0)
    save_dict(store, 32, 1)
    job = AnalyzeJob(AnalysisConfig(), SourceConfig(), LoggerConfig(kind="none"), Paths(tmp_path), tmp_path / "out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run(job)
    assert any("only one dictionary size (32)" in str(w.message) for w in caught)
    text = report.read_text()
    assert "only one dictionary size" in text and "skipped" in text
    assert (tmp_path / "out" / "analytic_null.csv").exists()


def test_report_links_only_files_that_exist(store, tmp_path):
    for J in (8, 16, 32, 64):
        save_dict(store, J, 0)
    out = tmp_path / "analysis"
    run(AnalyzeJob(AnalysisConfig(n_random=2), SourceConfig(), LoggerConfig(kind="none"), Paths(tmp_path), out))
    text = (out / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert len(links) >= 20
    for link in links:
        assert (out / link).is_file(), link
    for number in range(3, 13):
        assert f"fig{number:02d}" in text
    assert not list(tmp_path.glob(".analysis.tmp-*")) and not list(tmp_path.glob(".analysis.old-*"))  # none left


class FakeArtifact:
    def __init__(self, folder, name, version, metadata):
        self.folder, self.name, self.metadata = folder, f"{name}:v{version}", metadata
        self.downloads = 0

    def download(self, root):
        self.downloads += 1
        shutil.copytree(self.folder, root, dirs_exist_ok=True)
        return root


class FakeApi:
    """Stands in for wandb.Api (the W&B server cannot exist in tests): serves artifacts from a local store."""

    def __init__(self, store):
        self.by_name = {}
        for name in store.names():
            for version in (0, 1):
                path = store.root / name / f"v{version}"
                if path.exists():
                    art = store.get(f"{name}:v{version}")
                    self.by_name.setdefault(name, []).append(FakeArtifact(path, name, version, art.metadata))
        self.calls = []

    def artifact_collections(self, project_name, type_name):
        self.calls.append(("collections", project_name, type_name))
        return [type("C", (), {"name": n})() for n in self.by_name]

    def artifacts(self, type_name, name):
        self.calls.append(("artifacts", type_name, name))
        return self.by_name[name.rsplit("/", 1)[1]]


def test_wandb_source_downloads_once_and_uses_the_latest(store, tmp_path):
    save_dict(store, 8, 0)
    save_dict(store, 8, 0)  # v1
    save_dict(store, 16, 0)
    save_dict(store, 16, 0, layer=3)
    api = FakeApi(store)
    source = SourceConfig(kind="wandb", entity="team", project="proj")
    with pytest.warns(UserWarning, match="sae-L2-J8-s0 has 2 versions"):
        (variant, dicts), *others = collect_wandb(source, 2, tmp_path / "cache", api=api).items()
    assert variant == "" and not others
    assert sorted(dicts) == [(8, 0), (16, 0)]
    assert dicts[(8, 0)].path == tmp_path / "cache" / "sae-L2-J8-s0" / "v1"
    assert ("collections", "team/proj", "sae-dictionary") in api.calls
    with pytest.warns(UserWarning):
        collect_wandb(source, 2, tmp_path / "cache", api=api)
    assert all(a.downloads <= 1 for arts in api.by_name.values() for a in arts)  # cached after the first pull


UNFINISHED = {"until": "converged", "converged": False, "converged_at_step": None, "activations_seen": 1_000_000}


def test_an_unconverged_dictionary_is_warned_about_once_and_marked_everywhere(store, tmp_path, caplog):
    for J in (8, 16, 32):
        save_dict(store, J, 0, extra={"training": UNFINISHED} if J == 16 else None)
    job = AnalyzeJob(AnalysisConfig(n_random=2, n_boot=50), SourceConfig(), LoggerConfig(kind="none"), Paths(tmp_path))
    with caplog.at_level("WARNING", logger="sae_sweep"):
        report = run(job)
    warned = [r.getMessage() for r in caplog.records if "did not converge" in r.getMessage()]
    assert warned == ["sae-L2-J16-s0 did not converge within its cap (1000000 activations seen): the report marks it"]
    out = report.parent
    training = {r["dict_size"]: r["converged"] for r in csv.DictReader(open(out / "training.csv"))}
    assert training == {"8": "True", "16": "False", "32": "True"}
    assert {r["dict_size"]: r["converged"] for r in csv.DictReader(open(out / "counts.csv"))} == {
        "8": "True",
        "16": "False",
    }
    assert {r["dict_size"]: r["converged"] for r in csv.DictReader(open(out / "split.csv"))}["16"] == "False"
    findings = (out / "findings.md").read_text()
    assert "2 of 3 dictionaries met their stopping rule; 1 did not converge within their cap (J=16 s0 (1M)" in findings


def test_all_converged_says_so():
    res = type("R", (), {"training": [{"converged": True}] * 3})()
    assert (
        training(report_input(res))
        == "All 3 dictionaries met their stopping rule (held-out loss and decoder drift settled)."
    )


def test_a_dictionary_without_a_training_record_is_refused_by_name(store):
    art = save_dict(store, 8, 0)
    config = json.loads((art.path / "config.json").read_text())
    del config["training"]
    (art.path / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"sae-L2-J8-s0/v0 has a config.json without training"):
        load_dictionary(art.path, verify_files=False)


def test_a_variant_lacking_the_main_runs_sizes_falls_back_to_its_defaults():
    dicts = {(256, 0): None, (512, 0): None, (2048, 0): None}  # a control's sizes: no 4096 or 8192
    cfg = _sizes_of(AnalysisConfig(reference=8192, featured=4096), dicts, "untrained")
    assert (cfg.reference, cfg.featured) == (None, None)
    cfg = _sizes_of(AnalysisConfig(reference=8192, featured=512), dicts, "untrained")
    assert (cfg.reference, cfg.featured) == (None, 512)
    cfg = _sizes_of(AnalysisConfig(reference=512, featured=512), dicts, "untrained")  # featured must be below it
    assert (cfg.reference, cfg.featured) == (512, None)


@pytest.mark.parametrize("damage", ["deleted", "emptied", "retyped"])
def test_a_dictionary_with_a_damaged_manifest_is_named_never_left_out(store, damage):
    save_dict(store, 32, 0)
    art = save_dict(store, 64, 0)
    manifest = art.path / "artifact.json"
    if damage == "deleted":
        manifest.unlink()
    elif damage == "emptied":
        manifest.write_text("{}")
    else:
        manifest.write_text(manifest.read_text().replace('"sae-dictionary"', '"model"'))
    with pytest.raises(DataError, match=re.escape(str(art.path))):
        collect_local(store.root, layer=2)


def test_a_stores_unfinished_version_is_passed_over(store):
    art = save_dict(store, 32, 0)
    shutil.copytree(art.path, art.path.parent / ".version.tmp-host-1-abcdef12")  # a save in progress (or killed)
    (art.path.parent / ".version.tmp-host-1-abcdef12" / "artifact.json").unlink()
    assert list(collect_local(store.root, layer=2)) == [(32, 0)]


def test_the_reference_of_a_partial_sweep_keeps_the_most_dictionaries_comparable():
    whole = {(j, s) for j in (8, 16, 32) for s in (0, 1)}
    assert best_reference(whole, None) == 32 and usable(whole, 32) == whole
    extended = whole | {(64, 1)}  # one seed went further: J=32 keeps 6, J=64 would keep 4
    assert best_reference(extended, None) == 32 and usable(extended, 64) == {(8, 1), (16, 1), (32, 1), (64, 1)}
    assert best_reference(extended, 64) == 64
    assert best_reference({(32, 0), (64, 5)}, None) is None  # no seed has two sizes


def test_a_partial_sweep_is_analysed_as_far_as_it_goes_and_says_what_it_left_out(store, tmp_path, caplog):
    for J in (8, 16, 32):
        save_dict(store, J, 0)
    save_dict(store, 64, 5)  # a size only at another seed: nothing to compare it with
    job = AnalyzeJob(AnalysisConfig(n_random=2, n_boot=50), SourceConfig(), LoggerConfig(kind="none"), Paths(tmp_path))
    with caplog.at_level("WARNING", logger="sae_sweep"):
        report = run(job)
    line = "sae-L2-J64-s5 is left out: seed 5 has no J=32, the reference size"
    assert line in caplog.text and line in report.read_text()
    assert [r["dict_size"] for r in csv.DictReader(open(report.parent / "counts.csv"))] == ["8", "16"]
