"""SAELens folders: what an export holds (exact values on a hand-set SAE), reading one back (orientation and missing
fields refused by name), the sweep-wide export command, and, where sae-lens is installed, SAELens' own loader."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_sweep import DataError
from sae_sweep.dictionary import load_dictionary
from sae_sweep.interop import saelens
from sae_sweep.interop.export import export_sweep
from sae_sweep.store import ArtifactStore
from sae_sweep.train.sae import SAEConfig, SparseAutoencoder
from tests.conftest import REPO, dictionary_config, save_dict


def hand_set_sae(decoder_bias: bool = False, tied: bool = False) -> SparseAutoencoder:
    """d_in 2, J 3: atoms e1, e2, (e1 + e2)/sqrt 2; a distinct encoder so that a transposition would show."""
    sae = SparseAutoencoder(2, SAEConfig(dict_size=3, decoder_bias=decoder_bias, tied=tied))
    with torch.no_grad():
        sae.decoder.copy_(torch.tensor([[1.0, 0.0, 0.5**0.5], [0.0, 1.0, 0.5**0.5]]))
        if not tied:
            sae.encoder.copy_(torch.tensor([[1.0, 0.5], [0.0, 2.0], [-1.0, 1.0]]))
        sae.encoder_bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        if decoder_bias:
            sae.decoder_bias.copy_(torch.tensor([0.25, -0.5]))
    return sae


def export_of(tmp_path, sae, counts=(500, 0, 1)) -> tuple:
    """The SAELens folder of ``sae``'s weights, written as the SAE stage writes it, and its dictionary config."""
    tensors = {"decoder": sae.decoder.detach(), "encoder.bias": sae.encoder_bias.detach()}
    if not sae.tied:
        tensors["encoder.weight"] = sae.encoder.detach()
    if sae.decoder_bias is not None:
        tensors["decoder_bias"] = sae.decoder_bias.detach()
    sae_cfg = SAEConfig(dict_size=3, decoder_bias=sae.decoder_bias is not None, tied=sae.tied).to_dict()
    cfg = dictionary_config("sae-L2-J3-s0", d_in=2, dict_size=3, sae=sae_cfg)
    folder = tmp_path / "export"
    saelens.write(folder, tensors, cfg, np.array(counts), sae.architecture)
    return folder, cfg


def test_every_stored_dictionary_holds_an_export_with_the_documented_layout(tmp_path):
    sae = hand_set_sae()
    store = ArtifactStore(tmp_path / "store")
    art = save_dict(store, 3, 0, d_in=2, decoder=sae.decoder.detach(), counts=np.array([500, 0, 1]))
    folder = art.path / saelens.SAELENS_DIR
    w = load_file(str(folder / "sae_weights.safetensors"))
    assert set(w) == {"W_enc", "b_enc", "W_dec", "b_dec"}  # SAELens' loader is strict: no more, no fewer
    assert w["W_dec"].shape == (3, 2) and torch.equal(w["W_dec"][2], torch.full((2,), 0.5**0.5))  # rows are atoms
    d = load_dictionary(art.path)
    assert torch.equal(w["W_enc"], d.tensors["encoder.weight"].t()) and torch.equal(w["b_dec"], torch.zeros(2))
    cfg = json.loads((folder / "cfg.json").read_text())
    assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["apply_b_dec_to_input"]) == ("standard", 2, 3, False)
    assert cfg["metadata"]["hook_name"] == "blocks.2.mlp.hook_post" and cfg["metadata"]["sae_sweep_name"] == d.name
    # firing rates over the 1000 held-out rows, as log10; a feature that never fired sits at the floor, 1e-10
    sparsity = load_file(str(folder / "sparsity.safetensors"))["sparsity"]
    torch.testing.assert_close(sparsity, torch.tensor([np.log10(0.5), -10.0, -3.0], dtype=torch.float32))
    assert "saelens/cfg.json" in json.loads((art.path / "artifact.json").read_text())["files"]  # sealed, verified


@pytest.mark.parametrize(("decoder_bias", "tied"), [(False, False), (True, False), (False, True)])
def test_the_export_encodes_and_decodes_as_our_module_by_saelens_formula(tmp_path, decoder_bias, tied):
    """SAELens' standard SAE: codes = relu((x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc), x^ = codes @ W_dec
    + b_dec, computed here from the exported files alone."""
    sae = hand_set_sae(decoder_bias, tied)
    folder, _ = export_of(tmp_path, sae)
    w, cfg = load_file(str(folder / "sae_weights.safetensors")), json.loads((folder / "cfg.json").read_text())
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7], [2.0, 2.0]])
    codes = torch.relu((x - w["b_dec"] * cfg["apply_b_dec_to_input"]) @ w["W_enc"] + w["b_enc"])
    recon, ours = sae(x)
    assert torch.equal(codes, ours.detach()) and (codes > 0).any() and (codes == 0).any()
    torch.testing.assert_close(codes @ w["W_dec"] + w["b_dec"], recon.detach())


def test_reading_an_export_back_gives_the_same_atoms_and_rates(tmp_path):
    sae = hand_set_sae()
    folder, _ = export_of(tmp_path, sae)
    atoms, cfg, rates = saelens.read(folder)
    assert torch.equal(atoms, sae.decoder.detach()) and cfg["d_sae"] == 3
    np.testing.assert_allclose(rates, [0.5, 1e-10, 1e-3], rtol=1e-6)


def test_a_transposed_decoder_or_a_missing_field_is_named(tmp_path):
    folder, _ = export_of(tmp_path, hand_set_sae())
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    w = load_file(str(bad / "sae_weights.safetensors"))
    save_file({**w, "W_dec": w["W_dec"].t().contiguous()}, str(bad / "sae_weights.safetensors"))
    with pytest.raises(DataError, match=r"sae_weights.safetensors: W_dec has shape \(2, 3\).*\(3, 2\) \(transposed"):
        saelens.read(bad)
    cfg = json.loads((folder / "cfg.json").read_text())
    for field in ("d_sae", "d_in"):
        shutil.copytree(folder, tmp_path / field)
        (tmp_path / field / "cfg.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != field}))
        with pytest.raises(DataError, match=rf"{field}/cfg.json: no integer field {field}"):
            saelens.read(tmp_path / field)
    (bad / "cfg.json").write_text(json.dumps({**cfg, "architecture": "crosscoder"}))
    with pytest.raises(DataError, match="architecture 'crosscoder' is not one whose decoder rows are atoms"):
        saelens.read(bad)


def test_export_command_writes_one_folder_per_dictionary_and_converts_older_ones(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    arts = [save_dict(store, j, s) for j in (8, 16) for s in (0, 1)]
    old = store.save(  # written before exports existed: no saelens/ folder
        "sae-L2-J4-s0", "sae-dictionary", lambda f: _without_export(f, tmp_path), {}
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sae_sweep.interop.export", str(store.root), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "5 dictionaries exported" in proc.stdout, proc.stderr
    for art in [*arts, old]:
        atoms, cfg, _ = saelens.read(out / art.name)
        assert torch.equal(atoms, load_dictionary(art.path).decoder), art.name
    assert not list(out.glob(".*"))  # no temporary folder or lock file left behind
    assert len(export_sweep(store.root, out)) == 5  # again, over the first export: each folder replaced whole
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(a.name for a in [*arts, old])
    missing = subprocess.run(
        [sys.executable, "-m", "sae_sweep.interop.export", str(tmp_path / "nowhere"), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and "nowhere is not a folder" in missing.stderr and "Traceback" not in missing.stderr


def _without_export(folder, tmp_path):
    scratch = ArtifactStore(tmp_path / "scratch")
    art = save_dict(scratch, 4, 0)
    shutil.copytree(art.path, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("artifact.json", "saelens"))


def test_saelens_loads_every_export_and_encodes_to_our_codes(tmp_path):
    """Needs sae-lens (a separate environment: it pulls its own torch); skipped with the reason where absent."""
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is not installed (an optional extra, see README)")
    for decoder_bias, tied in [(False, False), (True, False), (False, True)]:
        sae = hand_set_sae(decoder_bias, tied)
        folder, _ = export_of(tmp_path / f"{decoder_bias}-{tied}", sae)
        loaded = sae_lens.SAE.load_from_disk(str(folder), device="cpu")
        x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(loaded.encode(x), sae(x)[1].detach())
    store = ArtifactStore(tmp_path / "store")  # a sweep's store, exported whole by the command's function
    for j, s in [(8, 0), (16, 0), (16, 1), (32, 0)]:
        save_dict(store, j, s)
    for folder in export_sweep(store.root, tmp_path / "out"):
        ours = SparseAutoencoder.from_dictionary(load_dictionary(store.get(folder.name).path))
        loaded = sae_lens.SAE.load_from_disk(str(folder), device="cpu")
        x = torch.relu(torch.randn(256, 16, generator=torch.Generator().manual_seed(1)))
        with torch.no_grad():
            torch.testing.assert_close(loaded.encode(x), ours(x)[1])
        meta = loaded.cfg.metadata  # what SAELens reads back, not the raw JSON: a pre-6 reading would lose these
        assert meta.hook_name == "blocks.2.mlp.hook_post" and meta.prepend_bos is False
        assert meta.sae_sweep_name == folder.name


def test_exports_resaved_by_saelens_itself_import_back_with_their_seeds(tmp_path):
    """Needs sae-lens. Load each export, save it with SAELens' own save_model, analyse the re-saved folders: the
    metadata SAELens kept still names each dictionary, so two seeds of one size stay two seeds."""
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is not installed (an optional extra, see README)")
    from sae_sweep.interop.foreign import collect_foreign  # noqa: PLC0415

    store = ArtifactStore(tmp_path / "store")
    for j, s in [(16, 0), (16, 1), (32, 0)]:
        save_dict(store, j, s)
    resaved = tmp_path / "resaved"
    for folder in export_sweep(store.root, tmp_path / "out"):
        sae_lens.SAE.load_from_disk(str(folder), device="cpu").save_model(resaved / folder.name)
    found = collect_foreign(resaved, layer=2)
    assert sorted(found[""]) == [(16, 0), (16, 1), (32, 0)]
    for (j, s), d in found[""].items():
        ours = load_dictionary(store.get(f"sae-L2-J{j}-s{s}").path)
        torch.testing.assert_close(d.decoder, ours.decoder)


def test_saes_saved_by_saelens_itself_import_as_one_variant_per_architecture(tmp_path):
    """Needs sae-lens. A standard and a TopK SAE of one size, made and saved by SAELens' own classes with the hook in
    their metadata and the seeds its trainer writes to runner_cfg.json: two variants, atoms as SAELens decodes them."""
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is not installed (an optional extra, see README)")
    from sae_sweep.interop.foreign import collect_foreign  # noqa: PLC0415

    root = tmp_path / "saes"
    saes = {
        "standard": sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=4, d_sae=6)),
        "topk": sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=4, d_sae=6, k=2)),
    }
    for i, (name, sae) in enumerate(saes.items()):
        torch.manual_seed(i)
        with torch.no_grad():
            sae.W_dec.copy_(torch.randn(6, 4))
        sae.cfg.metadata.hook_name = "blocks.2.hook_mlp_out"
        folder = root / name / "final_4096"  # where SAELens' trainer saves
        sae.save_model(folder)
        (folder / "runner_cfg.json").write_text(json.dumps({"seed": 3 + i}))
    found = collect_foreign(root, layer=2)
    assert sorted(found) == ["", "topk"] and list(found[""]) == [(6, 3)] and list(found["topk"]) == [(6, 4)]
    for variant, name in (("", "standard"), ("topk", "topk")):
        codes = torch.eye(6)  # one feature at a time: SAELens' decode minus its bias is that feature's atom
        with torch.no_grad():
            atoms = saes[name].decode(codes) - saes[name].b_dec
        torch.testing.assert_close(found[variant][(6, 3 if name == "standard" else 4)].decoder, atoms.t())


def test_an_older_dictionary_is_converted_as_relu_and_another_architecture_without_its_copy_is_refused(tmp_path):
    from types import SimpleNamespace  # noqa: PLC0415

    from sae_sweep.interop.export import _older  # noqa: PLC0415

    _older(SimpleNamespace(config=SimpleNamespace(sae={"dict_size": 8}), path=tmp_path))  # before sae.arch: ReLU
    _older(SimpleNamespace(config=SimpleNamespace(sae={"arch": "relu"}), path=tmp_path))
    with pytest.raises(DataError, match=r"\(sae.arch=topk\) has no saelens/ folder"):
        _older(SimpleNamespace(config=SimpleNamespace(sae={"arch": "topk"}), path=tmp_path))
