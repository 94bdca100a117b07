"""Collecting dictionaries: every dictionary of one layer in a folder or a W&B project, grouped by variant.

A store (or any folder of dictionary folders) is searched for manifests of type ``sae-dictionary``; a W&B project's
artifacts of that type are downloaded once into a cache. Names say the layer, size, seed and variant
(``sae-L2-J1024-s0-untrained``); the newest version of each name is kept, with a warning about the older ones. In a
store's layout (``<name>/v<N>/`` beside a ``latest`` pointer) the version ``latest`` names is the one kept, and a
corrupt pointer or a version folder without its manifest is refused by name rather than stepped over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sae_sweep import rules
from sae_sweep.dictionary import DICTIONARY_TYPE, Dictionary, load_dictionary
from sae_sweep.dictionary_folders import latest_by_name, latest_dictionaries
from sae_sweep.errors import ConfigError, DataError
from sae_sweep.store import MANIFEST
from sae_sweep.tracking import wandb_api

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


def what_else(folder: Path) -> str:
    """A sentence on what ``folder`` holds instead of dictionaries, when it is something sae-sweep knows: SAEs of
    other libraries (SAELens exports among them), or stable cores; "" otherwise."""
    from sae_sweep.interop.foreign import detect  # noqa: PLC0415

    # two levels: a folder of exports, or one of SAELens trainer runs (<name>/final_<N>/)
    children = [p for p in folder.iterdir() if p.is_dir()]
    inside = [folder, *children, *(q for p in children for q in p.iterdir() if q.is_dir())]
    if any(p.name.startswith("sae-core-") for p in inside):
        return (
            " It holds stable cores (analyze.py's analysis/core): each version already has its SAELens folder "
            "(<core>/vN/saelens); to analyse them as SAEs, use source=foreign source.path=<that folder>."
        )
    if any(detect(p) is not None for p in inside):
        return (
            " It holds SAEs of other libraries (SAELens, sparsify or dictionary_learning folders): analyse them "
            f"with source=foreign source.path={folder}."
        )
    return ""


def collect_local_variants(path: str | Path, layer: int) -> Collection:
    """Every dictionary of ``layer`` under ``path`` (a store, or any folder of dictionary folders), by variant: the
    version each name's ``latest`` names, none left out in silence (``dictionary_folders.latest_dictionaries``)."""
    return _group(latest_dictionaries(Path(path)), layer, where=str(path))


def collect_local(path: str | Path, layer: int, variant: str | None = None) -> dict[tuple[int, int], Dictionary]:
    """One variant's dictionaries under ``path`` by (size, seed); ``variant`` as AnalysisConfig.variant."""
    found = collect_local_variants(path, layer)
    return found[main_variant(found, variant, where=str(path))]


def collect_wandb(source: SourceConfig, layer: int, cache_dir: Path, api=None) -> Collection:
    """Download (once, into ``cache_dir``) the latest version of every dictionary artifact of a W&B project."""
    project = f"{source.entity}/{source.project}" if source.entity else source.project
    api = api or wandb_api(f"source=wandb (reading the dictionaries of the W&B project {project})")
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
    return _group(latest_by_name(found), layer, where=f"W&B project {project} (type {source.artifact_type})")


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
            f"no layer-{layer} dictionaries found in {where}.{what_else(Path(where)) if Path(where).is_dir() else ''} "
            "Train some first (`python train.py -m experiment=demo`), or point source.path / source.project at them."
        )
    for dicts in found.values():
        widths = {d.d_in: d.name for d in dicts.values()}
        if len(widths) > 1:
            desc = " and ".join(f"{name} (d_in={w})" for w, name in widths.items())
            raise DataError(f"the dictionaries have different widths: {desc}; compare one activation space at a time")
    return found
