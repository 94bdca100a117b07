"""SAEs of other libraries read for analysis: each layout written by hand from its documented names and shapes,
orientation mistakes and missing fields named, grouping by size and seed, and export -> import -> analysis giving
the numbers the store's own analysis gives."""

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sae_sweep import DataError
from sae_sweep.interop import foreign, saelens
from sae_sweep.store import ArtifactStore
from sae_sweep.train.archs import architecture
from sae_sweep.train.sae_config import SAEConfig
from tests.conftest import dictionary_config, run_analyze, save_dict

D_IN, J = 4, 6
ATOMS = torch.arange(J * D_IN, dtype=torch.float32).reshape(J, D_IN) / 10  # row j is atom j


def sparsify_folder(path, w_dec=ATOMS, cfg=None):
    path.mkdir(parents=True)
    (path / "cfg.json").write_text(json.dumps(cfg or {"d_in": D_IN, "num_latents": J, "k": 2, "expansion_factor": 1}))
    tensors = {"encoder.weight": torch.ones(J, D_IN), "encoder.bias": torch.zeros(J), "b_dec": torch.zeros(D_IN)}
    save_file({**tensors, "W_dec": w_dec.contiguous()}, str(path / "sae.safetensors"))
    return path


def dictionary_learning_folder(path, state, trainer=None):
    path.mkdir(parents=True)
    trainer = trainer or {"dict_class": "AutoEncoder", "activation_dim": D_IN, "dict_size": J, "seed": 2}
    (path / "config.json").write_text(json.dumps({"trainer": trainer}))
    torch.save(state, path / "ae.pt")
    return path


def read(path, **entry):
    return foreign.read_entry(path.parent, {"path": path.name, **entry})


def test_each_layout_gives_the_atoms_as_columns(tmp_path):
    got = read(sparsify_folder(tmp_path / "sparsify"))
    assert got.format == "sparsify" and torch.equal(got.decoder, ATOMS.t()) and got.seed is None
    standard = {"encoder.weight": torch.ones(J, D_IN), "decoder.weight": ATOMS.t().contiguous(), "bias": torch.zeros(4)}
    got = read(dictionary_learning_folder(tmp_path / "dl", standard))
    assert got.format == "dictionary_learning" and torch.equal(got.decoder, ATOMS.t()) and got.seed == 2
    got = read(dictionary_learning_folder(tmp_path / "dl-topk", {"W_dec": ATOMS, "b_dec": torch.zeros(4)}))
    assert torch.equal(got.decoder, ATOMS.t())
    np.save(tmp_path / "rows.npy", ATOMS.numpy())
    np.savez(tmp_path / "cols.npz", other=np.zeros(3), atoms=ATOMS.t().numpy())
    save_file({"W": ATOMS.contiguous()}, str(tmp_path / "rows.safetensors"))
    torch.save({"D": ATOMS.t().contiguous()}, tmp_path / "cols.pt")
    for name, entry in [
        ("rows.npy", {"atoms": "rows"}),
        ("cols.npz", {"atoms": "columns", "key": "atoms"}),
        ("rows.safetensors", {"atoms": "rows"}),
        ("cols.pt", {"atoms": "columns"}),
    ]:
        got = read(tmp_path / name, **entry)
        assert got.format == "matrix" and torch.equal(got.decoder, ATOMS.t()), name


def test_a_saelens_export_of_ours_says_its_seed_and_variant(tmp_path):
    tensors = {"decoder": ATOMS.t().contiguous(), "encoder.bias": torch.zeros(J), "encoder.weight": ATOMS}
    cfg = dictionary_config("sae-L2-J6-s3-untrained", d_in=D_IN, dict_size=J)
    saelens.write(tmp_path / "exp", tensors, cfg, np.array([0, 1, 2, 3, 4, 1000]), architecture(SAEConfig()))
    got = read(tmp_path / "exp")
    assert (got.format, got.seed, got.variant, got.synthetic) == ("saelens", 3, "untrained", False)
    d = foreign.as_dictionary(got, got.seed, layer=2)
    assert d.firing_frequency()[0] == 0.0 and d.firing_frequency()[5] == pytest.approx(1.0, rel=1e-6)  # dead; all
    assert d.config.imported and d.firing_counts is None and "decoder_init" not in d.tensors


def test_orientation_mistakes_and_missing_fields_are_named(tmp_path):
    with pytest.raises(DataError, match=r"sae.safetensors: shape \(4, 6\) does not hold atoms of width 4 as its rows"):
        read(sparsify_folder(tmp_path / "t", w_dec=ATOMS.t()))
    with pytest.raises(DataError, match=r"cfg.json: no field 'd_in'"):
        read(sparsify_folder(tmp_path / "c", cfg={"num_latents": J}))
    with pytest.raises(DataError, match=r"ae.pt: shape \(6, 4\) does not hold atoms of width 4 as its columns"):
        read(dictionary_learning_folder(tmp_path / "dl", {"decoder.weight": ATOMS}))
    with pytest.raises(DataError, match=r"config.json \(trainer\): no field 'activation_dim'"):
        read(dictionary_learning_folder(tmp_path / "dl2", {"W_dec": ATOMS}, trainer={"dict_size": J}))
    np.save(tmp_path / "m.npy", ATOMS.numpy())
    with pytest.raises(DataError, match=r'm.npy: a plain matrix needs "atoms": "rows" or "columns"'):
        read(tmp_path / "m.npy")
    with pytest.raises(DataError, match=r"does not hold atoms of width 4 as its columns; is the matrix transposed"):
        read(tmp_path / "m.npy", atoms="columns", d_in=4)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes.txt: not a layout this reads"):
        read(tmp_path / "notes.txt")


def test_grouping_by_size_and_seed_from_configs_or_the_manifest(tmp_path):
    root = tmp_path / "saes"
    sparsify_folder(root / "a")
    sparsify_folder(root / "b", w_dec=ATOMS.flip(0))  # another SAE: other weights (the same ones are one SAE)
    with pytest.raises(DataError, match=r"several SAEs of size 6 without a seed \(.*a, .*b\)"):
        foreign.collect_foreign(root, layer=2)
    manifest = {
        "dictionaries": [{"path": "a", "seed": 0}, {"path": "b", "seed": 1}, {"path": "m.npy", "atoms": "rows"}]
    }
    np.save(root / "m.npy", np.vstack([ATOMS.numpy()] * 2))  # 12 atoms: another size, seed 0 by default
    (root / foreign.MANIFEST_FILE).write_text(json.dumps(manifest))
    found = foreign.collect_foreign(root, layer=2)
    assert sorted(found[""]) == [(6, 0), (6, 1), (12, 0)]
    manifest["dictionaries"][1]["seed"] = 0
    (root / foreign.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"saes/a and .*saes/b are both size 6, seed 0"):
        foreign.collect_foreign(root, layer=2)


def _close(a: str, b: str) -> bool:
    try:
        return a == b or abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
    except ValueError:
        return False


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_export_then_import_gives_the_same_analysis(tmp_path):
    store = ArtifactStore(tmp_path / "root" / "store")
    rng = np.random.default_rng(0)
    for j in (16, 32, 64):
        for s in (0, 1):
            counts = rng.integers(0, 50, size=j) * (rng.random(j) > 0.3)  # some dead features
            save_dict(store, j, s, counts=counts)
    out = tmp_path / "exported"
    from sae_sweep.interop.export import export_sweep  # noqa: PLC0415

    export_sweep(store.root, out)
    common = ["logger=none", "analysis.n_boot=50", "analysis.n_perm=50", "analysis.hungarian_max=64"]
    ours = run_analyze([*common, f"paths.root={tmp_path / 'root'}", f"out_dir={tmp_path / 'a'}"], tmp_path)
    theirs = run_analyze(
        [*common, "source=foreign", f"source.path={out}", f"paths.root={tmp_path / 'r2'}", f"out_dir={tmp_path / 'b'}"],
        tmp_path,
    )
    assert ours.returncode == 0 and theirs.returncode == 0, theirs.stderr[-3000:]
    for table in ("counts.csv", "mcs_pairs.csv", "emd_J16.csv", "liveness.csv"):
        a, b = _rows(tmp_path / "a" / table), _rows(tmp_path / "b" / table)
        assert all(r.get("converged", "") == "" for r in b)  # not known for an imported SAE: left empty
        assert a and len(a) == len(b), table
        for x, y in zip(a, b, strict=True):  # liveness: log10 rates pass through float32 in SAELens' sparsity file
            x.pop("converged", None), y.pop("converged", None)
            assert x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x), (table, x, y)
    report = (tmp_path / "b" / "report.md").read_text()
    assert "movement from initialisation (Figure 14) skipped for" in report
    assert not (tmp_path / "b" / "movement.csv").exists() or not _rows(tmp_path / "b" / "movement.csv")


def saelens_folder(path, architecture="standard", hook="blocks.2.mlp.hook_post", runner_seed=None, cfg_seed=None):
    """A folder as SAELens 6 saves one: cfg.json, sae_weights.safetensors (its trainer adds runner_cfg.json)."""
    path.mkdir(parents=True)
    cfg = {"architecture": architecture, "d_in": D_IN, "d_sae": J, "metadata": {"hook_name": hook}}
    if cfg_seed is not None:
        cfg["seed"] = cfg_seed
    (path / "cfg.json").write_text(json.dumps(cfg))
    weights = {"W_enc": ATOMS.t().contiguous(), "b_enc": torch.zeros(J), "W_dec": ATOMS, "b_dec": torch.zeros(D_IN)}
    save_file(weights, str(path / "sae_weights.safetensors"))
    if runner_seed is not None:
        (path / "runner_cfg.json").write_text(json.dumps({"seed": runner_seed, "d_in": D_IN}))
    return path


def test_the_export_is_a_saelens_6_config_so_its_metadata_is_read_as_written(tmp_path):
    tensors = {"decoder": ATOMS.t().contiguous(), "encoder.bias": torch.zeros(J), "encoder.weight": ATOMS}
    cfg = dictionary_config("sae-L2-J6-s3", d_in=D_IN, dict_size=J)
    saelens.write(tmp_path / "exp", tensors, cfg, np.zeros(J), architecture(SAEConfig()))
    meta = json.loads((tmp_path / "exp" / "cfg.json").read_text())["metadata"]
    # SAELens 6 takes a config whose metadata names no version >= 6 for a pre-6 one and rebuilds its metadata
    assert int(meta["sae_lens_version"].split(".")[0]) >= 6
    assert meta["hook_name"] == "blocks.2.mlp.hook_post" and meta["prepend_bos"] is False
    assert meta["sae_sweep_name"] == "sae-L2-J6-s3"


def test_saelens_seeds_come_from_the_runner_config_beside_cfg_json(tmp_path):
    assert read(saelens_folder(tmp_path / "a", runner_seed=7)).seed == 7  # SAELens 6's trainer
    assert read(saelens_folder(tmp_path / "b", cfg_seed=5)).seed == 5  # SAELens before 6
    assert read(saelens_folder(tmp_path / "c")).seed is None


def test_the_architecture_is_the_variant_so_architectures_never_merge(tmp_path):
    root = tmp_path / "saes"
    saelens_folder(root / "relu")
    saelens_folder(root / "topk", architecture="topk")
    jump = {"dict_class": "JumpReLUAutoEncoder", "activation_dim": D_IN, "layer": 2}
    dictionary_learning_folder(root / "dl-jump", {"W_dec": ATOMS}, trainer=jump)
    with pytest.raises(DataError, match=r"read 2 different activations .*source.hook"):
        foreign.collect_foreign(root, layer=2)
    found = foreign.collect_foreign(root, layer=2, hook="blocks.2.mlp.hook_post")
    assert sorted(found) == ["", "topk"] and sorted(found[""]) == [(J, 0)] and sorted(found["topk"]) == [(J, 0)]
    assert read(root / "dl-jump").variant == "JumpReLUAutoEncoder" and read(root / "dl-jump").hook == "layer 2"
    plain = dictionary_learning_folder(tmp_path / "dl", {"W_dec": ATOMS})  # dict_class AutoEncoder: the main variant
    assert read(plain).variant == ""


def test_the_libraries_own_layouts_are_found_and_a_hook_is_picked(tmp_path, caplog):
    root = tmp_path / "runs"
    saelens_folder(root / "saelens-run" / "final_4096", runner_seed=1)  # SAELens' trainer: <name>/final_<N>/
    sparsify_folder(root / "sparsify-run" / "layers.2.mlp")  # sparsify: <run>/<hookpoint>/
    sparsify_folder(root / "sparsify-run" / "layers.3.mlp")
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("not an SAE")
    with caplog.at_level("WARNING", logger="sae_sweep.interop.foreign"):
        saes = foreign.read_folder(root)
    assert sorted(f.path.relative_to(root).as_posix() for f in saes) == [
        "saelens-run/final_4096", "sparsify-run/layers.2.mlp", "sparsify-run/layers.3.mlp"]  # fmt: skip
    assert "notes/README.md: a file, not an SAE folder" in caplog.text
    assert "notes: no SAE in it" in caplog.text
    with pytest.raises(DataError, match=r"read 3 different activations \(blocks.2.mlp.hook_post, layers.2.mlp, "):
        foreign.collect_foreign(root, layer=2)
    unhooked = {"dict_class": "AutoEncoder", "activation_dim": D_IN, "dict_size": J}  # no submodule_name, no layer
    dictionary_learning_folder(root / "dl-run" / "trainer_0", {"decoder.weight": ATOMS.t().contiguous()}, unhooked)
    with caplog.at_level("WARNING", logger="sae_sweep.interop.foreign"):
        found = foreign.collect_foreign(root, layer=2, hook="layers.3.mlp")
    assert [d.path.name for d in found[""].values()] == ["layers.3.mlp"]
    assert "left out 1 SAEs that record no hook, so may or may not read source.hook=layers.3.mlp" in caplog.text
    with pytest.raises(DataError, match=r"no SAE .* source.hook='layers.9'; its SAEs read \["):
        foreign.collect_foreign(root, layer=2, hook="layers.9")
