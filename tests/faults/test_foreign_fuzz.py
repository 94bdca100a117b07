"""Every file the foreign reader opens, damaged every way: each case ends in a DataError that names the file (or the
folder it belongs to), or in exactly the atoms of the undamaged input; never in another exception.

The registry below lists, per layout, the files the reader opens and which damages apply to each. What the reader
returns is compared (not a whole analysis), to keep the budget.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sae_sweep import DataError
from sae_sweep.interop import foreign
from tests.test_foreign import ATOMS, D_IN, J, dictionary_learning_folder, saelens_folder, sparsify_folder

pytestmark = pytest.mark.faults


def saelens_root(root):
    folder = saelens_folder(root / "sae", runner_seed=1)
    save_file({"sparsity": torch.full((J,), -2.0)}, str(folder / "sparsity.safetensors"))


def sparsify_root(root):
    sparsify_folder(root / "sae")


def dictionary_learning_root(root):
    dictionary_learning_folder(root / "sae", {"decoder.weight": ATOMS.t().contiguous(), "bias": torch.zeros(D_IN)})


def matrix_root(root):
    root.mkdir(parents=True)
    np.save(root / "atoms.npy", ATOMS.numpy())
    manifest = {"dictionaries": [{"path": "atoms.npy", "format": "matrix", "atoms": "rows", "seed": 0}]}
    (root / foreign.MANIFEST_FILE).write_text(json.dumps(manifest))


BYTES = ("deleted", "truncated", "flipped header", "not UTF-8")
JSON = (*BYTES, "a list", "a string", "a list inside")
WEIGHTS = (*BYTES, "NaN", "inf", "zero atoms", "a zero atom", "wrong length")
RATES = (*BYTES, "NaN", "inf", "zero atoms", "wrong length")  # a zero log10 rate is a valid one (fires always)
REGISTRY = {  # layout -> (how to build it, {file the reader opens: the damages that apply})
    "saelens": (saelens_root, {"sae/cfg.json": JSON, "sae/runner_cfg.json": JSON,
                               "sae/sae_weights.safetensors": WEIGHTS, "sae/sparsity.safetensors": RATES}),
    "sparsify": (sparsify_root, {"sae/cfg.json": JSON, "sae/sae.safetensors": WEIGHTS}),
    "dictionary_learning": (dictionary_learning_root, {"sae/config.json": JSON, "sae/ae.pt": BYTES}),
    "matrix": (matrix_root, {foreign.MANIFEST_FILE: JSON, "atoms.npy": BYTES}),
}  # fmt: skip
CASES = [(layout, name, how) for layout, (_, files) in REGISTRY.items() for name, ds in files.items() for how in ds]


def damage(path, how: str) -> None:
    """Damage one file in place (``how``: one of the registry's damages)."""
    data = path.read_bytes()
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped header":  # the first bytes: a safetensors header length, JSON's first brace, .npy's magic
        path.write_bytes(bytes(b ^ 0xFF for b in data[:8]) + data[8:])
    elif how == "not UTF-8":
        path.write_bytes(b"\xff\xfe\x00" + data)
    elif how in ("a list", "a string"):
        path.write_text(json.dumps([1, 2] if how == "a list" else "cfg"))
    elif how == "a list inside":  # every object-valued field of the file made a list
        obj = json.loads(data)
        path.write_text(json.dumps({k: [v] if isinstance(v, dict) else v for k, v in obj.items()} | {"metadata": []}))
    else:
        _damage_tensors(path, how)


def _damage_tensors(path, how: str) -> None:
    from safetensors.torch import load_file  # noqa: PLC0415

    tensors = load_file(str(path))
    key = "W_dec" if "W_dec" in tensors else "sparsity"
    t = tensors[key].clone()
    if how == "NaN":
        t.view(-1)[1] = float("nan")
    elif how == "inf":
        t.view(-1)[1] = float("inf")
    elif how == "zero atoms":
        t = t[:0]
    elif how == "a zero atom":
        t[2] = 0
    elif how == "wrong length":
        t = t[:-1]
    save_file({**tensors, key: t.contiguous()}, str(path))


@pytest.mark.parametrize(("layout", "name", "how"), CASES, ids=["-".join(c) for c in CASES])
def test_a_damaged_foreign_file_is_named_or_read_exactly_as_before(tmp_path, layout, name, how):
    build, _ = REGISTRY[layout]
    build(tmp_path / "clean")
    (want,) = foreign.read_folder(tmp_path / "clean")
    root = tmp_path / "damaged"
    build(root)
    damage(root / name, how)
    try:
        got = foreign.read_folder(root)
    except DataError as exc:
        said = str(exc)
        assert "\n" not in said and (str(root / name) in said or str((root / name).parent) in said), said
        return
    assert len(got) == 1 and torch.equal(got[0].decoder, want.decoder), (layout, name, how)
    if name.endswith("sparsity.safetensors"):  # the firing rates: read as written, or left out when unreadable
        assert got[0].firing_rates is None or np.array_equal(got[0].firing_rates, want.firing_rates)


def test_a_link_back_into_the_folder_is_one_sae_never_a_second_seed(tmp_path, caplog):
    saelens_root(tmp_path / "root")
    os.symlink("..", tmp_path / "root" / "sae" / "up")  # root/sae/up/sae is root/sae again
    (tmp_path / "root" / "copy").mkdir()
    saelens_folder(tmp_path / "root" / "copy" / "same", runner_seed=2)  # a copy under another seed: same weights
    with caplog.at_level("WARNING", logger="sae_sweep.interop.foreign"):
        found = foreign.collect_foreign(tmp_path / "root", layer=2)
    assert [(k, d.path.relative_to(tmp_path / "root").as_posix()) for k, d in found[""].items()] == [
        ((J, 2), "copy/same")]  # the first in name order; not (J, 1) beside it  # fmt: skip
    assert caplog.text.count("holds the same weights as") == 1 + caplog.text.count("up/sae holds")
    assert "one SAE, read once" in caplog.text
