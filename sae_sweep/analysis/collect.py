"""Collecting dictionaries: every dictionary of one layer in a folder or a W&B project, grouped by variant.

A store (or any folder of dictionary folders) is searched for manifests of type ``sae-dictionary``; a W&B project's
artifacts of that type are downloaded once into a cache. Names say the layer, size, seed and variant
(``sae-L2-J1024-s0-untrained``); the newest version of each name is kept, with a warning about the older ones. In a
store's layout (``<name>/v<N>/`` beside a ``latest`` pointer) the version ``latest`` names is the one kept, and a
corrupt pointer or a version folder without its manifest is refused by name rather than stepped over.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sae_sweep import rules
from sae_sweep.dictionary import DICTIONARY_TYPE, SAE_WEIGHTS_FILE, Dictionary, load_dictionary
from sae_sweep.errors import ConfigError, DataError
from sae_sweep.store import LATEST, MANIFEST, ArtifactStore, read_manifest

SOURCES = ("local", "wandb", "foreign")


@dataclass(frozen=True)
class SourceConfig:
    kind: str = "local"  # local: the artifact store (or any folder of dictionary folders); wandb: a W&B project;
    #                      foreign: a folder of SAEs trained by other libraries (interop/foreign.py)
    path: str | None = None  # local: a store or sweep output folder; None: paths.root's store
    entity: str | None = None  # wandb: team or user; None: your default entity
    project: str = "sae-sweep"
    artifact_type: str = DICTIONARY_TYPE
    hook: str | None = None  # foreign: the activations to analyse when the SAEs read several (their library's name)

    def __post_init__(self) -> None:
        if self.kind not in SOURCES:
            raise ConfigError(f"source.kind must be one of {SOURCES}, got {self.kind!r}")
        rules.enforce(rules.View({"source": self}), at="section")  # which keys each kind reads (rules.py)


_NAME = re.compile(r"^sae-L(?P<layer>\d+)-J(?P<size>\d+)-s(?P<seed>\d+)(?:-(?P<variant>[A-Za-z0-9._-]+))?$")


Collection = dict[str, dict[tuple[int, int], Dictionary]]  # variant ("" = the note's setup) -> (size, seed) -> dict


def _latest_by_name(found: Iterable[tuple[str, int, Path]]) -> dict[str, Path]:
    """Keep the newest version of each name, warning about the older ones."""
    by_name: dict[str, list[tuple[int, Path]]] = {}
    for name, version, path in found:
        by_name.setdefault(name, []).append((version, path))
    chosen = {}
    for name, versions in sorted(by_name.items()):
        versions.sort()
        if len(versions) > 1:
            old = ", ".join(f"v{v}" for v, _ in versions[:-1])
            warnings.warn(
                f"{name} has {len(versions)} versions; using the latest, v{versions[-1][0]} (ignoring {old})",
                stacklevel=2,
            )
        chosen[name] = versions[-1][1]
    return chosen


def collect_local_variants(path: str | Path, layer: int) -> Collection:
    """Every dictionary of ``layer`` under ``path`` (a store, or any folder of dictionary folders), by variant.

    A dictionary is found by its weights (``sae.safetensors``), not by its manifest, so that one whose manifest is
    missing, unreadable, or names another type is refused by name instead of left out of the analysis in silence.
    Hidden folders (a store's unfinished ``.tmp-*`` versions) are passed over.
    """
    root = Path(path)
    found = []
    for weights in sorted(root.rglob(SAE_WEIGHTS_FILE)) if root.is_dir() else []:
        folder = weights.parent
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        manifest = read_manifest(folder)
        said = {k: manifest.get(k) for k in ("name", "type", "version")}
        if said["type"] != DICTIONARY_TYPE or not isinstance(said["version"], int) or not isinstance(said["name"], str):
            raise DataError(
                f"{folder} holds a dictionary ({SAE_WEIGHTS_FILE}) but its {MANIFEST} says {said} (expected a name, "
                f"type {DICTIONARY_TYPE!r} and a version number): it was edited or damaged. Delete that version "
                "folder (or train it again), or restore its manifest."
            )
        found.append((manifest["name"], manifest["version"], folder))
    return _group(_as_stored(_latest_by_name(found)), layer, where=str(root))


def _as_stored(chosen: dict[str, Path]) -> dict[str, Path]:
    """For names laid out as a store keeps them, the version their ``latest`` names, after checking that every
    version folder has its manifest (DataError naming the folder or the pointer otherwise)."""
    out = {}
    for name, path in chosen.items():
        folder = path.parent
        if not re.fullmatch(r"v\d+", path.name) or folder.name != name:
            out[name] = path  # a plain folder of dictionary folders: no versions, no pointer
            continue
        for version in sorted(folder.iterdir()):
            if re.fullmatch(r"v\d+", version.name) and version.is_dir():
                read_manifest(version)  # an unsealed or edited version is named, not skipped
        has_pointer = (folder / LATEST).exists()
        out[name] = ArtifactStore(folder.parent).get(name, verify_files=False).path if has_pointer else path
    return out


def collect_local(path: str | Path, layer: int, variant: str | None = None) -> dict[tuple[int, int], Dictionary]:
    """One variant's dictionaries under ``path`` by (size, seed); ``variant`` as AnalysisConfig.variant."""
    found = collect_local_variants(path, layer)
    return found[main_variant(found, variant, where=str(path))]


def collect_wandb(source: SourceConfig, layer: int, cache_dir: Path, api=None) -> Collection:
    """Download (once, into ``cache_dir``) the latest version of every dictionary artifact of a W&B project."""
    if api is None:
        import wandb  # noqa: PLC0415

        api = wandb.Api()
    project = f"{source.entity}/{source.project}" if source.entity else source.project
    found = []
    for collection in api.artifact_collections(project_name=project, type_name=source.artifact_type):
        for art in api.artifacts(source.artifact_type, f"{project}/{collection.name}"):
            meta = art.metadata or {}
            if meta.get("layer", layer) != layer:
                continue
            name, _, version = art.name.partition(":")
            target = cache_dir / name / version
            if not (target / MANIFEST).exists():
                art.download(root=str(target))
            found.append((name, int(version.lstrip("v")), target))
    return _group(_latest_by_name(found), layer, where=f"W&B project {project} (type {source.artifact_type})")


def main_variant(found: Collection, variant: str | None, where: str) -> str:
    """Which variant is the main run: the one asked for, else the note's setup (""), else the only one."""
    names = ", ".join(repr(v) for v in sorted(found))
    if variant is not None:
        if variant not in found:
            raise ConfigError(f"analysis.variant={variant!r}: no such dictionaries in {where}; found variants {names}")
        return variant
    if "" in found:
        return ""
    if len(found) == 1:
        return next(iter(found))
    raise ConfigError(f"{where} holds several variants ({names}) and none is the plain one: pick analysis.variant=")


def _group(chosen: dict[str, Path], layer: int, where: str) -> Collection:
    found: Collection = {}
    for name, path in chosen.items():
        m = _NAME.match(name)
        if m is None or int(m["layer"]) != layer:
            continue
        d = load_dictionary(path)  # checks every file's sha256 and names a corrupt one
        found.setdefault(m["variant"] or "", {})[(d.dict_size, int(m["seed"]))] = d
    if not found:
        raise DataError(
            f"no layer-{layer} dictionaries found in {where}. Train some first "
            "(`python train.py -m experiment=demo`), or point source.path / source.project at them."
        )
    for dicts in found.values():
        widths = {d.d_in: d.name for d in dicts.values()}
        if len(widths) > 1:
            desc = " and ".join(f"{name} (d_in={w})" for w, name in widths.items())
            raise DataError(f"the dictionaries have different widths: {desc}; compare one activation space at a time")
    return found
