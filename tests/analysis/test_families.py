"""Feature families across sizes and the stable core (measures/families.py, measures/core.py, stable_core.py,
products.py): exact structure on hand-made dictionaries, and the core as a product the store, the collector and the
export each treat as what it is."""

import csv
import json

import numpy as np
import pytest
import torch

from sae_sweep.analysis.collect import collect_local_variants
from sae_sweep.analysis.measures.core import build_core, relu_codes
from sae_sweep.analysis.measures.families import feature_families, score_splits, span_residual
from sae_sweep.analysis.measures.verdicts import Atoms, verdicts
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.analysis.stable_core import CoreConfig, load_core, save_core
from sae_sweep.dictionary import DICTIONARY_TYPE, Dictionary
from sae_sweep.errors import DataError
from sae_sweep.store import ArtifactStore

from ..conftest import dictionary_config, save_dict

CFG = AnalysisConfig(verdict_null="isotropic", null_rows=1024)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _planted_split(d: int = 64):
    """Seed 0 at sizes 4 and 8 in d dimensions: the small dictionary's atom 0 is the normalised sum of the large one's
    atoms 0 and 1, its atom 1 is the large one's atom 2, its atoms 2 and 3 are unrelated random directions."""
    rng = np.random.default_rng(0)
    large = _unit(rng.standard_normal((8, d)))
    small = np.stack([_unit(large[0] + large[1]), large[2], *_unit(rng.standard_normal((2, d)))])
    return {(4, 0): Atoms("small", small.astype(np.float32), np.ones(4)),
            (8, 0): Atoms("large", large.astype(np.float32), np.ones(8))}  # fmt: skip


def test_a_feature_planted_as_the_sum_of_two_atoms_is_their_parent_and_an_unrelated_atom_has_no_children():
    atoms = _planted_split()
    fam = feature_families(atoms, verdicts(atoms, CFG), CFG)
    parent, cos = fam.links[((4, 0), (8, 0))]
    assert parent.tolist() == [0, 0, 1, -1, -1, -1, -1, -1]
    assert cos[2] == pytest.approx(1.0, abs=1e-6)
    (row,) = fam.pairs
    assert {k: row[k] for k in ("parents", "split", "children_of_splits", "persisted", "vanished", "new")} == {
        "parents": 4, "split": 1, "children_of_splits": 2, "persisted": 1, "vanished": 2, "new": 5,
    }  # fmt: skip
    assert row["median_split_residual"] == pytest.approx(0.0, abs=1e-6)  # the parent is in its children's span
    trees = {r["family"]: r for r in fam.trees}
    assert trees["s0-J4-0"]["members"] == 3 and trees["s0-J4-0"]["J8"] == "0 1"
    assert trees["s0-J4-2"]["members"] == 1 and trees["s0-J4-2"]["J8"] == ""  # it vanished: no children
    assert trees["s0-J8-3"]["born"] == 8  # a new feature roots a family of its own
    assert fam.member_of[(8, 0, 1)] == "s0-J4-0"


def test_the_span_residual_is_zero_inside_the_non_negative_span_and_one_orthogonal_to_it():
    e = np.eye(3)
    assert span_residual(_unit(e[0] + e[1]), e[:2]) == pytest.approx(0.0, abs=1e-12)
    assert span_residual(e[2], e[:2]) == pytest.approx(1.0)
    assert span_residual(_unit(e[0] - e[1]), e[:2]) == pytest.approx(np.sqrt(0.5))  # w >= 0: -e1 is out of reach


def test_a_split_is_true_when_its_children_are_distinct_parts_of_one_group():
    groups = np.array([0, 0, 1, 1, -1])  # true features 0-1 are group 0's parts, 2-3 group 1's, 4 none
    parent = np.array([0, 0, 1, 1, 2, 2, 3, 3, -1])
    named = np.array([0, 1, 1, 2, 0, 0, 4, 3, 2])  # parent 0: parts 0, 1 (true); 1: 1 and 2 (two groups);
    #                                                 2: part 0 twice (a duplicate); 3: 4 is in no group
    assert score_splits(parent, named, groups) == (4, 1, 1)  # parent 2 is a duplicate, not a split
    assert score_splits(parent, np.where(np.arange(9) == 0, -1, named), groups) == (3, 0, 1)  # one part: not scored


def _dictionary(name: str, decoder: torch.Tensor, encoder: torch.Tensor, bias: torch.Tensor, b_dec: torch.Tensor):
    tensors = {"decoder": decoder, "encoder.weight": encoder, "encoder.bias": bias, "decoder_bias": b_dec}
    j = decoder.shape[1]
    config = dictionary_config(name, d_in=decoder.shape[0], dict_size=j)
    return Dictionary(name, decoder, tensors, config, np.arange(1, j + 1), None)


def _seeds(perms, shifts=None, d: int = 32, j: int = 6):
    """Dictionaries of one size, one per permutation: the same features (decoder, encoder, bias) in their order,
    decoder ``shifts`` (a unit direction added times each seed's amount, then renormalised), own decoder biases."""
    g = torch.Generator().manual_seed(0)
    dec = torch.nn.functional.normalize(torch.randn(d, j, generator=g), dim=0)
    enc, bias = torch.randn(j, d, generator=g), torch.randn(j, generator=g)
    push = torch.nn.functional.normalize(torch.randn(d, j, generator=g), dim=0)
    out = {}
    for s, perm in enumerate(perms):
        moved = torch.nn.functional.normalize(dec + (shifts[s] if shifts else 0.0) * push, dim=0)
        b_dec = torch.randn(d, generator=g)
        out[(j, s)] = _dictionary(f"sae-L2-J{j}-s{s}", moved[:, perm], enc[perm], bias[perm], b_dec)
    return out


def _atoms_of(dicts):
    return {k: Atoms(d.name, d.decoder.T.numpy(), d.firing_frequency()) for k, d in dicts.items()}


def test_the_core_of_two_dictionaries_equal_up_to_permutation_is_that_dictionary():
    dicts = _seeds([list(range(6)), [3, 5, 0, 1, 4, 2]])
    first = dicts[(6, 0)]
    first.tensors["decoder_bias"] = dicts[(6, 1)].tensors["decoder_bias"].clone()  # one map, in two orders
    acts = np.random.default_rng(1).standard_normal((500, 32)).astype(np.float32)
    core = build_core(dicts, verdicts(_atoms_of(dicts), CFG), 6, CFG, acts)
    assert core.members[:, 0].tolist() == list(range(6)) and core.members[:, 1].tolist() == [2, 3, 5, 0, 4, 1]
    for key in ("decoder", "encoder.weight", "encoder.bias", "decoder_bias"):
        torch.testing.assert_close(core.tensors[key], first.tensors[key])
    assert core.metrics["fvu"] == pytest.approx(core.metrics["full_fvu"], rel=1e-6)
    assert core.metrics["l0"] == pytest.approx(core.metrics["full_l0"])


def test_a_core_atom_is_its_groups_medoid_and_codes_as_its_own_dictionary_does():
    """Three seeds: seed 1's atoms lie between seed 0's and seed 2's, so seed 1 gives every atom; each seed has its
    own decoder bias, folded into the core's encoder bias so that codes are seed 1's own."""
    dicts = _seeds([list(range(6)), [1, 0, 2, 3, 5, 4], list(range(6))], shifts=[0.1, 0.0, -0.1])
    core = build_core(dicts, verdicts(_atoms_of(dicts), CFG), 6, CFG)
    assert core.medoid.tolist() == [1] * 6
    x = torch.randn(200, 32, generator=torch.Generator().manual_seed(2))
    own = relu_codes(dicts[(6, 1)].tensors, x)  # (200, 6) in seed 1's order
    torch.testing.assert_close(relu_codes(core.tensors, x), own[:, core.members[:, 1]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(core.tensors["decoder_bias"], dicts[(6, 0)].tensors["decoder_bias"])


def test_a_feature_found_in_one_other_seed_but_not_all_stays_out_of_the_core():
    dicts = _seeds([list(range(6)), list(range(6)), list(range(6))])
    third = dicts[(6, 2)]
    third.decoder[:, 0] = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator()), dim=0)
    third.tensors["decoder"] = third.decoder
    core = build_core(dicts, verdicts(_atoms_of(dicts), CFG), 6, CFG)
    assert core.members[:, 0].tolist() == [1, 2, 3, 4, 5]


def _core_config(n: int = 2) -> CoreConfig:
    return CoreConfig(name="sae-core-L2-J6", variant="", layer=2, d_in=4, dict_size=6, n_features=n, seeds=[0, 1],
                      sources=["sae-L2-J6-s0", "sae-L2-J6-s1"], rule="test", analysis={}, members=[[0, 1], [2, 2]],
                      medoid=[0, 1], mean_cos=[0.99, 0.98], metrics={"fvu": 0.5}, source={"gpt": None})  # fmt: skip


def _core_tensors(n: int = 2, d: int = 4):
    g = torch.Generator().manual_seed(3)
    return {"decoder": torch.randn(d, n, generator=g), "encoder.weight": torch.randn(n, d, generator=g),
            "encoder.bias": torch.randn(n, generator=g), "decoder_bias": torch.randn(d, generator=g)}  # fmt: skip


def test_a_core_is_its_own_product_that_the_collector_and_the_export_never_take_for_a_dictionary(tmp_path):
    from sae_sweep.interop.export import export_sweep  # noqa: PLC0415

    store = ArtifactStore(tmp_path / "store")
    for s in (0, 1):
        save_dict(store, 16, s)
    art = save_core(store, _core_config(), _core_tensors(), np.array([0.1, 0.2]))
    core = load_core(art.path)
    assert core.config == _core_config() and set(core.tensors) == set(_core_tensors())
    assert sorted(collect_local_variants(store.root, 2)[""]) == [(16, 0), (16, 1)]  # not a third dictionary
    assert sorted(p.name for p in export_sweep(store.root, tmp_path / "out")) == ["sae-L2-J16-s0", "sae-L2-J16-s1"]
    with pytest.raises(DataError, match="holds a 'sae-dictionary', not a 'sae-core'"):
        load_core(store.get("sae-L2-J16-s0").path)
    with open(art.path / "saelens" / "latent_scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["source"], r["source_feature"]) for r in rows] == [("sae-L2-J6-s0", "0"), ("sae-L2-J6-s1", "2")]
    cfg = json.loads((art.path / "saelens" / "cfg.json").read_text())
    assert (cfg["d_sae"], cfg["architecture"], cfg["metadata"]["sae_sweep_name"]) == (2, "standard", "sae-core-L2-J6")
    assert art.type != DICTIONARY_TYPE


def test_the_core_saelens_folder_encodes_to_our_codes_with_sae_lens(tmp_path):
    """Needs sae-lens (CI's second environment)."""
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is not installed (an optional extra, see README)")
    tensors = _core_tensors()
    art = save_core(ArtifactStore(tmp_path / "store"), _core_config(), tensors, np.array([0.1, 0.2]))
    loaded = sae_lens.SAE.load_from_disk(str(art.path / "saelens"), device="cpu")
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), relu_codes(tensors, x))


def test_the_analysis_writes_cores_and_latent_scores_and_the_export_carries_each_dictionarys_rows(tmp_path, caplog):
    from sae_sweep.analysis.collect import SourceConfig  # noqa: PLC0415
    from sae_sweep.analysis.job import AnalyzeJob, run  # noqa: PLC0415
    from sae_sweep.interop.export import main as export_main  # noqa: PLC0415
    from sae_sweep.store import Paths  # noqa: PLC0415
    from sae_sweep.tracking import LoggerConfig  # noqa: PLC0415

    from .test_verdicts import _planted_store  # noqa: PLC0415

    store = _planted_store(tmp_path)  # sizes 12 and 24 on seeds 0 and 1 sharing 6 planted atoms
    job = AnalyzeJob(AnalysisConfig(n_boot=20, n_perm=20), SourceConfig(), LoggerConfig(kind="none"), Paths(tmp_path))
    out = run(job).parent
    core = load_core(ArtifactStore(out / "core").get("sae-core-L2-J12").path)
    assert core.config.n_features == 6 and core.config.sources == ["sae-L2-J12-s0", "sae-L2-J12-s1"]
    with open(out / "latent_scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (12 + 24) and sum(r["core_latent"] != "" for r in rows if r["name"].endswith("J12-s0")) == 6
    assert export_main([str(store.root), str(tmp_path / "export")]) == 0  # scores from the sibling analysis/
    with open(tmp_path / "export" / "sae-L2-J24-s1" / "latent_scores.csv") as f:
        mine = list(csv.DictReader(f))
    assert [r["feature"] for r in mine] == [str(i) for i in range(24)]
    assert mine == [{k: v for k, v in r.items() if k != "name"} for r in rows if r["name"] == "sae-L2-J24-s1"]
    meta = json.loads((tmp_path / "export" / "sae-L2-J24-s1" / "latent_scores.json").read_text())
    assert len(meta["analysed"]) == 4 and meta["analysis"] == str(out.resolve())
    assert export_main([str(store.root), str(tmp_path / "bare"), "--no-scores"]) == 0
    assert not (tmp_path / "bare" / "sae-L2-J24-s1" / "latent_scores.csv").exists()
    from ..conftest import save_dict  # noqa: PLC0415

    save_dict(store, 24, 1, d_in=16)  # sae-L2-J24-s1:v1, trained again: not the weights the analysis scored
    with caplog.at_level("WARNING"):
        assert export_main([str(store.root), str(tmp_path / "stale")]) == 0
    assert not (tmp_path / "stale" / "sae-L2-J24-s1" / "latent_scores.csv").exists()  # never v0's scores on v1
    assert (tmp_path / "stale" / "sae-L2-J24-s0" / "latent_scores.csv").exists()
    assert "sae-L2-J24-s1 is exported without latent scores: the analysis at" in caplog.text
    assert "its weights are not the ones analysed" in caplog.text
    assert export_main([str(tmp_path), str(tmp_path / "exports")]) == 0  # STORE given as paths.root: its analysis/
    assert (tmp_path / "exports" / "sae-L2-J24-s0" / "latent_scores.csv").exists()
    lines = (out / "latent_scores.csv").read_text().splitlines()
    (out / "latent_scores.csv").write_text("\n".join(lines[:-1]) + "\n")  # one latent short: another analysis
    assert export_main([str(store.root), str(tmp_path / "again")]) == 2
    assert not (tmp_path / "again").exists()  # refused before any export is written


def test_the_synthetic_control_is_plain_synthetic_data_before_data_with_a_hierarchy():
    from types import SimpleNamespace  # noqa: PLC0415

    from sae_sweep.analysis.job import control_order  # noqa: PLC0415

    def variant(synthetic, arch="relu"):
        config = SimpleNamespace(synthetic=synthetic, imported=False, sae={"arch": arch})
        return {(16, 0): SimpleNamespace(config=config)}

    found = {"": variant(None), "synthetic-hier8x4-l1-0.005": variant({"groups": 8}),
             "synthetic-l1-0.005": variant({"n_features": 512}), "synthetic-topk-k20": variant({}, "topk")}  # fmt: skip
    assert control_order(found) == ["", "synthetic-l1-0.005", "synthetic-hier8x4-l1-0.005", "synthetic-topk-k20"]
