"""SAEs trained by other libraries, read as atoms for the analysis.

A folder given to ``analyze.py source=foreign source.path=<folder>`` holds one entry per SAE, each one of:

    saelens              a folder with cfg.json + sae_weights.safetensors (W_dec (d_sae, d_in): rows are atoms)
    sparsify             a folder with cfg.json + sae.safetensors (EleutherAI sparsify: W_dec (num_latents, d_in))
    dictionary_learning  a folder with ae.pt + config.json (saprmarks/dictionary_learning: decoder.weight
                         (activation_dim, dict_size), columns are atoms; W_dec (dict_size, activation_dim) for the
                         JumpReLU and BatchTopK classes)
    matrix               a .npy, .npz, .safetensors or .pt file holding one matrix; which tensor and whether the atoms
                         are its rows or columns come from the manifest

Without a manifest every folder under the given one is searched, to a depth of four, where the libraries put their
SAEs: SAELens' trainer writes ``<name>/final_<N>/``, sparsify ``<run>/<hookpoint>/``, dictionary_learning
``<save_dir>/trainer_<i>/``. A folder that is not an SAE is skipped with one line saying why.

Sizes come from the weights; seeds from the library's record where it keeps one (SAELens 6's trainer writes it to
``runner_cfg.json`` beside ``cfg.json``; older SAELens to ``cfg.json``'s ``seed``; dictionary_learning's
``trainer.seed``; a SAELens folder exported here names its seed and variant in ``metadata.sae_sweep_name``). The
architecture is the variant: SAELens' ``architecture`` and dictionary_learning's ``dict_class`` (their plain ReLU
SAEs, ``standard`` and ``AutoEncoder``, are the main variant), so different architectures never merge into one size
sweep. Each SAE says which activations it read (``hook``: SAELens' ``metadata.hook_name``, sparsify's hookpoint
folder, dictionary_learning's ``trainer.submodule_name`` or ``layer``); SAEs of several hooks need
``source.hook=<one of them>``: one activation space at a time.

A manifest, ``sae_sweep_import.json`` in the folder, names entries and fills what the files do not say (``seed``,
``variant``, ``hook``, a matrix's ``atoms`` and ``key``)::

    {"dictionaries": [{"path": "run-a/layer2", "seed": 1},
                      {"path": "atoms.npy", "format": "matrix", "atoms": "rows", "seed": 0, "variant": "topk"}]}

Every problem (an unknown layout, a missing field, a matrix that cannot be the stated orientation, two entries of one
size and seed) is a DataError naming the file and the field.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sae_sweep.dictionary import Dictionary, DictionaryConfig
from sae_sweep.errors import DataError
from sae_sweep.interop import saelens

FORMATS = ("saelens", "sparsify", "dictionary_learning", "matrix")
log = logging.getLogger(__name__)

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
    hook: str | None = None  # the activations it was trained on, as its library names them, when the files say


MAIN_ARCHITECTURES = ("", "standard", "AutoEncoder", "relu")  # the libraries' plain ReLU SAEs: the main variant
SEARCH_DEPTH = 4  # folders below source.path searched for SAEs when there is no manifest
RUNNER_CFG_FILE = "runner_cfg.json"  # SAELens 6's training runner: the run's settings, its seed among them


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


def _variant(architecture) -> str:
    """The variant an imported SAE's architecture makes: "" for the libraries' plain ReLU SAE."""
    return "" if architecture in MAIN_ARCHITECTURES or architecture is None else str(architecture)


def _read_sparsify(folder: Path, in_run: bool) -> tuple[torch.Tensor, int | None, str, str | None]:
    """sparsify's SAEs are TopK ones; a run folder holds one per hookpoint, named after it (``in_run``: the folder is
    inside another, as sparsify writes them; a folder of its own has a name its user chose)."""
    from safetensors.torch import load_file  # noqa: PLC0415

    cfg = _json(folder / "cfg.json")
    d_in = _need(cfg, "d_in", folder / "cfg.json")
    tensors = load_file(str(folder / "sae.safetensors"))
    w_dec = _need(tensors, "W_dec", folder / "sae.safetensors")
    atoms = _atoms(w_dec, rows=True, where=str(folder / "sae.safetensors"), d_in=d_in)
    return atoms, cfg.get("seed"), "", folder.name if in_run else None


def _read_dictionary_learning(folder: Path) -> tuple[torch.Tensor, int | None, str, str | None]:
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
    hook = trainer.get("submodule_name") or (f"layer {trainer['layer']}" if "layer" in trainer else None)
    return dec, trainer.get("seed"), _variant(trainer.get("dict_class")), hook


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
    variant, synthetic, encoder, hook = "", False, None, None
    if fmt == "saelens":
        decoder, cfg, rates = saelens.read(path)
        meta, encoder = cfg.get("metadata") or {}, cfg.get("_encoder")
        seed, variant = _saelens_seed(path, cfg), _variant(cfg.get("architecture"))
        hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
        synthetic = str(meta.get("model_name", "")).startswith("synthetic")
        ours = _NAME.match(str(meta.get("sae_sweep_name", "")))
        if ours:  # exported from this project: its name says the seed and the variant
            seed, variant = int(ours["seed"]), ours["variant"] or ""
    elif fmt == "sparsify":
        decoder, seed, variant, hook = _read_sparsify(path, in_run=len(Path(entry["path"]).parts) > 1)
    elif fmt == "dictionary_learning":
        decoder, seed, variant, hook = _read_dictionary_learning(path)
    else:
        decoder, seed, _ = _read_matrix(path, entry)
    seed = entry.get("seed", seed)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise DataError(f"{path}: seed must be an integer, got {seed!r}")
    name = entry.get("name") or str(entry["path"]).replace("/", "_")
    variant = str(entry.get("variant", variant))
    return Foreign(name, fmt, decoder, seed, variant, rates, path, synthetic, encoder, entry.get("hook", hook))


def _saelens_seed(folder: Path, cfg: dict) -> int | None:
    """SAELens 6 keeps the seed in the training runner's runner_cfg.json beside cfg.json; older versions in cfg.json."""
    runner = folder / RUNNER_CFG_FILE
    seed = _json(runner).get("seed") if runner.is_file() else None
    return cfg.get("seed") if seed is None else seed


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
        entries = [{"path": p.relative_to(root).as_posix()} for p in _search(root, SEARCH_DEPTH)]
        if not entries:
            raise DataError(
                f"no SAEs found in {root}: expected folders in SAELens, sparsify or dictionary_learning layout, or "
                f"a {MANIFEST_FILE} listing them (plain matrices need one)"
            )
    return [read_entry(root, e if isinstance(e, dict) else {"path": e}) for e in entries]


def _search(folder: Path, depth: int) -> list[Path]:
    """The SAEs under ``folder`` (not itself), depth-first in name order; an SAE's own folder is not searched
    further. What is neither an SAE nor a folder holding one is skipped with a line saying why; hidden entries (a
    leading dot: lock files, .DS_Store) are passed over."""
    found = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if detect(p) is not None and (p.is_dir() or depth == SEARCH_DEPTH):  # plain matrices need a manifest below
            found.append(p)
        elif p.is_dir() and depth > 1 and (inside := _search(p, depth - 1)):
            found += inside
        else:
            log.warning("skipped %s: %s", p, _why_not(p, depth))
    return found


def _why_not(p: Path, depth: int) -> str:
    if p.is_file():
        if p.name == MANIFEST_FILE:
            return f"a {MANIFEST_FILE} is read only at the top of source.path"
        if p.suffix in MATRIX_SUFFIXES:
            return f"a plain matrix outside the top folder needs an entry in {MANIFEST_FILE}"
        return "a file, not an SAE folder"
    if depth <= 1:
        return f"deeper than {SEARCH_DEPTH} folders below source.path; list it in {MANIFEST_FILE}"
    return (
        "no SAE in it (SAELens: cfg.json + sae_weights.safetensors; sparsify: cfg.json + sae.safetensors; "
        "dictionary_learning: ae.pt + config.json)"
    )


def _one_hook(saes: list[Foreign], hook: str | None, root: Path) -> list[Foreign]:
    """The SAEs of ``hook`` (all of them when None and they share one): one activation space at a time."""
    hooks = sorted({f.hook for f in saes if f.hook is not None})
    if hook is not None:
        chosen = [f for f in saes if f.hook == hook]
        if not chosen:
            raise DataError(f"no SAE in {root} was trained on source.hook={hook!r}; its SAEs read {hooks}")
        return chosen
    if len(hooks) > 1:
        raise DataError(
            f"the SAEs in {root} read {len(hooks)} different activations ({', '.join(hooks)}): analyse one at a "
            f"time with source.hook=<one of them>"
        )
    return saes


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


def collect_foreign(
    root: str | Path, layer: int, hook: str | None = None
) -> dict[str, dict[tuple[int, int], Dictionary]]:
    """Every SAE under ``root`` (of ``hook``, when given) by variant, then (size, seed). An entry without a seed takes
    0 when it is the only one of its size and variant; two such entries, or two with one size and seed, are refused
    by name."""
    found: dict[str, dict[tuple[int, int], Dictionary]] = {}
    groups: dict[tuple[str, int], list[Foreign]] = {}
    for f in _one_hook(read_folder(root), hook, Path(root)):
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
