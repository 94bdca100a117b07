"""Finding the dictionaries under a folder (a store, or any folder of dictionary folders): one folder per name, the
version its ``latest`` names, and none left out in silence.

A dictionary is found by its weights (``sae.safetensors``) or by a manifest that says it is one, so that a folder
whose manifest is missing, unreadable or edited, or whose weights were deleted, is refused by name when it is read
instead of being passed over. Hidden folders (a store's unfinished temporary versions) are passed over. Both the
analysis (``analysis/collect.py``) and the export (``interop/export.py``) read a sweep through here.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

from sae_sweep.dictionary import DICTIONARY_TYPE, SAE_WEIGHTS_FILE
from sae_sweep.errors import DataError
from sae_sweep.store import LATEST, MANIFEST, ArtifactStore, read_manifest


def dictionary_folders(root: Path) -> dict[Path, dict | None]:
    """The folders under ``root`` that hold a dictionary, by their weights or by a manifest that says so, each with
    its manifest (None when it is unreadable: the caller reads it again, and is refused by name)."""
    if not root.is_dir():
        return {}
    found: dict[Path, dict | None] = {p.parent: None for p in root.rglob(SAE_WEIGHTS_FILE)}
    for path in root.rglob(MANIFEST):
        try:
            manifest = read_manifest(path.parent)
        except DataError:
            continue  # not known to be a dictionary: a damaged GPT's or core's manifest is for its own reader
        if manifest["type"] == DICTIONARY_TYPE or path.parent in found:
            found[path.parent] = manifest
    return {f: found[f] for f in sorted(found) if not any(p.startswith(".") for p in f.relative_to(root).parts)}


def latest_by_name(found: Iterable[tuple[str, int, Path]]) -> dict[str, Path]:
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


def latest_dictionaries(root: Path) -> dict[str, Path]:
    """name -> the folder of each dictionary under ``root``: in a store's layout the version ``latest`` names."""
    found = []
    for folder, manifest in dictionary_folders(root).items():
        manifest = manifest or read_manifest(folder)  # unreadable: refused here, by name
        if manifest["type"] != DICTIONARY_TYPE:
            raise DataError(
                f"{folder} holds a dictionary ({SAE_WEIGHTS_FILE}) but its {MANIFEST} says type "
                f"{manifest['type']!r} (expected {DICTIONARY_TYPE!r}): it was edited or damaged. Delete that "
                "version folder (or train it again), or restore its manifest."
            )
        found.append((manifest["name"], manifest["version"], folder))
    return _as_stored(latest_by_name(found))


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
