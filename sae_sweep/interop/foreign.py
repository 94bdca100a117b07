"""SAEs trained by other libraries, read as atoms for the analysis.

A folder given to ``analyze.py source=foreign source.path=<folder>`` holds one entry per SAE, each one of:

    saelens              a folder with cfg.json + sae_weights.safetensors (W_dec (d_sae, d_in): rows are atoms)
    sparsify             a folder with cfg.json + sae.safetensors (EleutherAI sparsify: W_dec (num_latents, d_in))
    dictionary_learning  a folder with ae.pt + config.json (saprmarks/dictionary_learning: decoder.weight
                         (activation_dim, dict_size), columns are atoms; W_dec (dict_size, activation_dim) for the
                         JumpReLU and BatchTopK classes)
    matrix               a .npy, .npz, .safetensors or .pt file holding one matrix; which tensor and whether the atoms
                         are its rows or columns come from the manifest

Sizes come from the weights; seeds from the library's config where it records one (SAELens' ``seed``,
dictionary_learning's ``trainer.seed``; a SAELens folder exported here names its seed and variant in
``metadata.sae_sweep_name``). A manifest, ``sae_sweep_import.json`` in the folder, names entries and fills
what the files do not say::

    {"dictionaries": [{"path": "run-a/layer2", "seed": 1},
                      {"path": "atoms.npy", "format": "matrix", "atoms": "rows", "seed": 0, "variant": "topk"}]}

Every problem (an unknown layout, a missing field, a matrix that cannot be the stated orientation, two entries of one
size and seed) is a DataError naming the file and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sae_sweep.dictionary import Dictionary, DictionaryConfig
from sae_sweep.errors import DataError
from sae_sweep.interop import saelens

FORMATS = ("saelens", "sparsify", "dictionary_learning", "matrix")
MANIFEST_FILE = "sae_sweep_import.json"
MATRIX_SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".pth")
_NAME = re.compile(r"^sae-L\d+-J\d+-s(?P<seed>\d+)(?:-(?P<variant>[A-Za-z0-9._-]+))?$")  # our dictionaries' names


@dataclass(frozen=True)
class Foreign:
    """One imported SAE: its atoms as the columns of ``decoder`` (d_in, J), like ours."""

    name: str
    format: str
    decoder: torch.Tensor
    seed: int | None
    variant: str
    firing_rates: np.ndarray | None  # (J,) when the files record them (SAELens' sparsity.safetensors)
    path: Path
    synthetic: bool = False  # trained on synthetic data (a SAELens export of ours says so in metadata.model_name)
    encoder: torch.Tensor | None = None  # (J, d_in) when the files hold one, for the encoder-decoder cosines


def detect(path: Path) -> str | None:
    """The format of ``path`` from its files, or None."""
    if path.is_file():
        return "matrix" if path.suffix in MATRIX_SUFFIXES else None
    if saelens.is_saelens_folder(path):
        return "saelens"
    if (path / "cfg.json").is_file() and (path / "sae.safetensors").is_file():
        return "sparsify"
    if (path / "ae.pt").is_file() and (path / "config.json").is_file():
        return "dictionary_learning"
    return None


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable JSON ({exc})") from None


def _atoms(matrix: torch.Tensor, rows: bool, where: str, d_in: int | None = None) -> torch.Tensor:
    """(d_in, J) float32 from a 2-d ``matrix`` whose rows (or columns) are atoms; checks d_in when it is known."""
    if matrix.dim() != 2:
        raise DataError(f"{where}: expected a 2-d matrix of atoms, got shape {tuple(matrix.shape)}")
    dec = (matrix.t() if rows else matrix).float().contiguous()
    if d_in is not None and dec.shape[0] != d_in:
        side = "rows" if rows else "columns"
        raise DataError(
            f"{where}: shape {tuple(matrix.shape)} does not hold atoms of width {d_in} as its {side}; "
            f"is the matrix transposed?"
        )
    return dec


def _need(cfg: dict, key: str, where: Path):
    if key not in cfg:
        raise DataError(f"{where}: no field {key!r}")
    return cfg[key]


def _read_sparsify(folder: Path) -> tuple[torch.Tensor, int | None, None]:
    from safetensors.torch import load_file  # noqa: PLC0415

    cfg = _json(folder / "cfg.json")
    d_in = _need(cfg, "d_in", folder / "cfg.json")
    tensors = load_file(str(folder / "sae.safetensors"))
    w_dec = _need(tensors, "W_dec", folder / "sae.safetensors")
    return _atoms(w_dec, rows=True, where=str(folder / "sae.safetensors"), d_in=d_in), cfg.get("seed"), None


def _read_dictionary_learning(folder: Path) -> tuple[torch.Tensor, int | None, None]:
    cfg = _json(folder / "config.json")
    trainer = _need(cfg, "trainer", folder / "config.json")
    d_in = _need(trainer, "activation_dim", folder / "config.json (trainer)")
    try:
        state = torch.load(folder / "ae.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable pickle is the same problem to the user
        raise DataError(f"{folder / 'ae.pt'}: not a readable state dict ({exc})") from None
    if "decoder.weight" in state:  # nn.Linear(dict_size, activation_dim): (activation_dim, dict_size)
        dec = _atoms(state["decoder.weight"], rows=False, where=str(folder / "ae.pt"), d_in=d_in)
    elif "W_dec" in state:  # (dict_size, activation_dim)
        dec = _atoms(state["W_dec"], rows=True, where=str(folder / "ae.pt"), d_in=d_in)
    else:
        raise DataError(f"{folder / 'ae.pt'}: neither 'decoder.weight' nor 'W_dec' (found {sorted(state)})")
    return dec, trainer.get("seed"), None


def _read_matrix(path: Path, entry: dict) -> tuple[torch.Tensor, None, None]:
    orientation = entry.get("atoms")
    if orientation not in ("rows", "columns"):
        raise DataError(
            f'{path}: a plain matrix needs "atoms": "rows" or "columns" in its {MANIFEST_FILE} entry '
            f"(got {orientation!r}): the file cannot say which side holds the features"
        )
    key = entry.get("key")
    if path.suffix == ".npy":
        tensors = {"": torch.from_numpy(np.load(path))}
    elif path.suffix == ".npz":
        with np.load(path) as z:
            tensors = {k: torch.from_numpy(z[k]) for k in z.files}
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file  # noqa: PLC0415

        tensors = load_file(str(path))
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        tensors = loaded if isinstance(loaded, dict) else {"": loaded}
    if key is None and len(tensors) == 1:
        key = next(iter(tensors))
    if key not in tensors:
        found = sorted(tensors)
        raise DataError(f'{path}: name the matrix as "key" in its {MANIFEST_FILE} entry (found {found})')
    where = f"{path} [{key or 'array'}]"
    return _atoms(tensors[key], rows=orientation == "rows", where=where, d_in=entry.get("d_in")), None, None


def read_entry(root: Path, entry: dict) -> Foreign:
    """One SAE from a manifest entry (``path`` relative to ``root``; ``format``, ``seed``, ``variant``, ``name``,
    and for a plain matrix ``atoms`` and ``key``, all optional except where the files cannot say)."""
    if "path" not in entry:
        raise DataError(f'{root / MANIFEST_FILE}: an entry without "path": {entry}')
    path = root / entry["path"]
    if not path.exists():
        raise DataError(f"{root / MANIFEST_FILE}: {entry['path']!r} does not exist under {root}")
    fmt = entry.get("format") or detect(path)
    if fmt not in FORMATS:
        raise DataError(
            f'{path}: not a layout this reads ({", ".join(FORMATS)}); give "format" in its {MANIFEST_FILE} entry'
            if fmt is None
            else f"{root / MANIFEST_FILE}: format {fmt!r} of {entry['path']!r} is not one of {FORMATS}"
        )
    rates = None
    variant, synthetic, encoder = "", False, None
    if fmt == "saelens":
        decoder, cfg, rates = saelens.read(path)
        seed, meta, encoder = cfg.get("seed"), cfg.get("metadata") or {}, cfg.get("_encoder")
        synthetic = str(meta.get("model_name", "")).startswith("synthetic")
        ours = _NAME.match(str(meta.get("sae_sweep_name", "")))
        if ours:  # exported from this project: its name says the seed and the variant
            seed, variant = int(ours["seed"]), ours["variant"] or ""
    elif fmt == "sparsify":
        decoder, seed, _ = _read_sparsify(path)
    elif fmt == "dictionary_learning":
        decoder, seed, _ = _read_dictionary_learning(path)
    else:
        decoder, seed, _ = _read_matrix(path, entry)
    seed = entry.get("seed", seed)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise DataError(f"{path}: seed must be an integer, got {seed!r}")
    name = entry.get("name") or str(entry["path"]).replace("/", "_")
    return Foreign(name, fmt, decoder, seed, str(entry.get("variant", variant)), rates, path, synthetic, encoder)


def read_folder(root: str | Path) -> list[Foreign]:
    """Every SAE in ``root``: the manifest's entries when there is one, else every entry whose layout is known."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of SAEs (source.path)")
    manifest = root / MANIFEST_FILE
    if manifest.exists():
        entries = _json(manifest).get("dictionaries")
        if not isinstance(entries, list) or not entries:
            raise DataError(f'{manifest}: expected {{"dictionaries": [{{"path": ...}}, ...]}}')
    else:
        entries = [{"path": p.name} for p in sorted(root.iterdir()) if detect(p) is not None]
        if not entries:
            raise DataError(
                f"no SAEs found in {root}: expected folders in SAELens, sparsify or dictionary_learning layout, or "
                f"a {MANIFEST_FILE} listing them (plain matrices need one)"
            )
    return [read_entry(root, e if isinstance(e, dict) else {"path": e}) for e in entries]


def as_dictionary(f: Foreign, seed: int, layer: int) -> Dictionary:
    """The analysis's view of an imported SAE: its atoms, and a config that says what is not known."""
    d_in, J = f.decoder.shape
    config = DictionaryConfig(
        name=f.name,
        variant=f.variant,
        d_in=d_in,
        layer=layer,
        dict_size=J,
        seed=seed,
        l1_coeff=float("nan"),
        sae={},
        harvest={},
        gpt=None,
        synthetic=None,
        activations={"data": "synthetic"} if f.synthetic else {},
        steps=0,
        n_resampled=0,
        run_id=f"imported {f.format}: {f.path}",
        metrics={},
        training={"imported": f.format},
    )
    rates = None
    if f.firing_rates is not None:  # SAELens floors a dead feature's log10 rate: below the floor counts as dead
        rates = np.where(f.firing_rates <= saelens.SPARSITY_FLOOR * 1.001, 0.0, f.firing_rates)
    tensors = {"decoder": f.decoder} | ({"encoder.weight": f.encoder} if f.encoder is not None else {})
    return Dictionary(f.name, f.decoder, tensors, config, None, f.path, firing_rates=rates)


def collect_foreign(root: str | Path, layer: int) -> dict[str, dict[tuple[int, int], Dictionary]]:
    """Every SAE under ``root`` by variant, then (size, seed). An entry without a seed takes 0 when it is the only
    one of its size and variant; two such entries, or two with one size and seed, are refused by name."""
    found: dict[str, dict[tuple[int, int], Dictionary]] = {}
    groups: dict[tuple[str, int], list[Foreign]] = {}
    for f in read_folder(root):
        groups.setdefault((f.variant, f.decoder.shape[1]), []).append(f)
    for (variant, J), members in sorted(groups.items()):
        unseeded = [f for f in members if f.seed is None]
        if len(unseeded) > 1:
            names = ", ".join(str(f.path) for f in unseeded)
            raise DataError(f'several SAEs of size {J} without a seed ({names}): give each a "seed" in {MANIFEST_FILE}')
        for f in members:
            seed = 0 if f.seed is None else f.seed
            key = (J, seed)
            if key in found.setdefault(variant, {}):
                raise DataError(
                    f"{found[variant][key].path} and {f.path} are both size {J}, seed {seed}"
                    f'{f" (variant {variant!r})" if variant else ""}: set distinct "seed"s in {MANIFEST_FILE}'
                )
            found[variant][key] = as_dictionary(f, seed, layer)
    widths = {d.d_in for dicts in found.values() for d in dicts.values()}
    if len(widths) > 1:
        raise DataError(
            f"the SAEs in {root} have different input widths {sorted(widths)}: one activation space at a time"
        )
    return found
