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
import pickle
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
LAYOUT_FILES = {  # the files that make a folder an SAE of each library (detect())
    "SAELens": ("cfg.json", "sae_weights.safetensors"),
    "sparsify": ("cfg.json", "sae.safetensors"),
    "dictionary_learning": ("ae.pt", "config.json"),
}
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
    """A JSON file that must hold an object: DataError naming the file when it is unreadable, not UTF-8, or another
    JSON value (a list, a string)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object {{...}}, found a {type(value).__name__}")
    return value


def _section(cfg: dict, key: str, where: Path) -> dict:
    """``cfg[key]`` when it is an object, {} when absent; DataError when it is something else."""
    value = cfg.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataError(f"{where}: {key!r} should be an object {{...}}, found a {type(value).__name__}: {value!r:.60}")
    return value


def _checked(f: Foreign) -> Foreign:
    """DataError naming the SAE's file when its atoms cannot be compared: none at all, a NaN or inf weight, or an
    atom of zero norm (no direction)."""
    d_in, n = f.decoder.shape
    if n == 0 or d_in == 0:
        raise DataError(f"{f.path}: the SAE has {n} atoms of width {d_in}: nothing to compare; leave it out")
    bad = (~torch.isfinite(f.decoder)).any(dim=0).nonzero().flatten().tolist()
    if bad:
        raise DataError(f"{f.path}: {len(bad)} of its {n} atoms hold NaN or inf weights (atoms {bad[:5]}"
                        f"{' ...' if len(bad) > 5 else ''}): a damaged or diverged SAE; leave it out")  # fmt: skip
    zero = (f.decoder.norm(dim=0) == 0).nonzero().flatten().tolist()
    if zero:
        raise DataError(f"{f.path}: {len(zero)} of its {n} atoms are all zeros (atoms {zero[:5]}"
                        f"{' ...' if len(zero) > 5 else ''}), which have no direction to compare; drop them from "
                        "the decoder, or leave the SAE out")  # fmt: skip
    return f


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
    cfg = _json(folder / "cfg.json")
    d_in = _need(cfg, "d_in", folder / "cfg.json")
    tensors = saelens.load_tensors(folder / "sae.safetensors")
    w_dec = _need(tensors, "W_dec", folder / "sae.safetensors")
    atoms = _atoms(w_dec, rows=True, where=str(folder / "sae.safetensors"), d_in=d_in)
    if cfg.get("num_latents") not in (None, atoms.shape[1]):  # sparsify records it when set (else expansion_factor)
        raise DataError(f"{folder / 'sae.safetensors'}: W_dec holds {atoms.shape[1]} atoms, cfg.json's num_latents "
                        f"says {cfg['num_latents']}")  # fmt: skip
    return atoms, cfg.get("seed"), "", folder.name if in_run else None


def _read_dictionary_learning(folder: Path) -> tuple[torch.Tensor, int | None, str, str | None]:
    cfg = _json(folder / "config.json")
    trainer = _need(cfg, "trainer", folder / "config.json")
    if not isinstance(trainer, dict):
        raise DataError(f"{folder / 'config.json'}: 'trainer' should be an object {{...}}, found {trainer!r:.60}")
    d_in = _need(trainer, "activation_dim", folder / "config.json (trainer)")
    try:
        state = torch.load(folder / "ae.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable pickle is the same problem to the user
        raise DataError(f"{folder / 'ae.pt'}: not a readable state dict ({_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise DataError(f"{folder / 'ae.pt'}: expected a state dict, found a {type(state).__name__}")
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
    try:
        tensors = _load_matrix_file(path)
    except (OSError, ValueError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:
        raise DataError(f"{path}: not a readable {path.suffix} matrix file ({_first_line(exc)})") from None
    if key is None and len(tensors) == 1:
        key = next(iter(tensors))
    if key not in tensors:
        found = sorted(tensors)
        raise DataError(f'{path}: name the matrix as "key" in its {MANIFEST_FILE} entry (found {found})')
    where = f"{path} [{key or 'array'}]"
    return _atoms(tensors[key], rows=orientation == "rows", where=where, d_in=entry.get("d_in")), None, None


def _load_matrix_file(path: Path) -> dict:
    """The tensors of a plain matrix file, by name ("" for a file of one unnamed array)."""
    if path.suffix == ".npy":
        return {"": torch.from_numpy(np.load(path))}
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: torch.from_numpy(z[k]) for k in z.files}
    if path.suffix == ".safetensors":
        return saelens.load_tensors(path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    return loaded if isinstance(loaded, dict) else {"": loaded}


def _first_line(exc: BaseException) -> str:
    """A library's error message, first line only: the DataError that quotes it stays one line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


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
        meta, encoder = _section(cfg, "metadata", path / saelens.CFG_FILE), cfg.get("_encoder")
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
    return _checked(
        Foreign(name, fmt, decoder, seed, variant, rates, path, synthetic, encoder, entry.get("hook", hook))
    )


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
        skipped: list[str] = []
        entries = [{"path": p.relative_to(root).as_posix()} for p in _search(root, SEARCH_DEPTH, skipped)]
        if not entries:
            why = f" (skipped {'; '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''})" if skipped else ""
            raise DataError(
                f"no SAEs found in {root}{why}: expected folders in SAELens, sparsify or dictionary_learning layout, "
                f"or a {MANIFEST_FILE} listing them (plain matrices need one)"
            )
    return [read_entry(root, e if isinstance(e, dict) else {"path": e}) for e in entries]


def _distinct(saes: list[Foreign]) -> list[Foreign]:
    """One entry per set of weights among SAEs of one size and variant: a second entry with the same atoms (a
    symbolic link back into the folder, or a copy) is the same SAE, which counted as another seed would fake a
    replication; it is named and read once."""
    import hashlib  # noqa: PLC0415

    first: dict[str, Foreign] = {}
    for f in saes:
        digest = hashlib.sha256(f.decoder.contiguous().numpy().tobytes()).hexdigest()
        if digest in first:
            log.warning("%s holds the same weights as %s (a link or a copy): one SAE, read once", f.path,
                        first[digest].path)  # fmt: skip
            continue
        first[digest] = f
    return list(first.values())


def _search(folder: Path, depth: int, skipped: list[str]) -> list[Path]:
    """The SAEs under ``folder`` (not itself), depth-first in name order; an SAE's own folder is not searched
    further. What is neither an SAE nor a folder holding one is skipped with a line saying why; hidden entries (a
    leading dot: lock files, .DS_Store) are passed over."""
    found = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if detect(p) is not None and (p.is_dir() or depth == SEARCH_DEPTH):  # plain matrices need a manifest below
            found.append(p)
        elif p.is_dir() and depth > 1 and (inside := _search(p, depth - 1, skipped)):
            found += inside
        else:
            log.warning("skipped %s: %s", p, why := _why_not(p, depth))
            skipped.append(f"{p}: {why}")
    return found


def _why_not(p: Path, depth: int) -> str:
    if p.is_file():
        if p.name == MANIFEST_FILE:
            return f"a {MANIFEST_FILE} is read only at the top of source.path"
        if p.suffix in MATRIX_SUFFIXES:
            return f"a plain matrix outside the top folder needs an entry in {MANIFEST_FILE}"
        return "a file, not an SAE folder"
    halves = {  # part of a layout's files: say which are missing (a deleted or misnamed file)
        layout: [f for f in files if not (p / f).is_file()]
        for layout, files in LAYOUT_FILES.items()
        if any((p / f).is_file() for f in files)
    }
    if halves:
        held = sorted({f for files in LAYOUT_FILES.values() for f in files if (p / f).is_file()})
        lacks = " or ".join(f"{', '.join(missing)} ({layout})" for layout, missing in halves.items())
        return f"holds {', '.join(held)} but not {lacks}, which that layout needs too"
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
        if unhooked := [str(f.path) for f in saes if f.hook is None]:  # maybe of the hook asked: never dropped unsaid
            log.warning(
                'left out %d SAEs that record no hook, so may or may not read source.hook=%s: %s; give each a "hook" '
                "in %s to include it",
                len(unhooked),
                hook,
                ", ".join(unhooked),
                MANIFEST_FILE,
            )
        if others := sorted({f.hook for f in saes if f.hook not in (None, hook)}):
            log.info("left out the SAEs of the other hooks %s (source.hook=%s)", others, hook)
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
        members = _distinct(members)
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
