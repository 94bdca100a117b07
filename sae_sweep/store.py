"""Products on disk: the versioned artifact store, its sha256 manifests, and the paths of a run's outputs.

Each version is built whole (``files.atomic_folder``) and records the sha256 of its files, checked on load.

Layout of the store::

    <store>/<name>/v0/ ... v1/ ...      each version: the product's files + artifact.json
    <store>/<name>/latest               a one-line file naming the newest version ("v1")

``artifact.json`` holds the name, type, version, metadata and the sha256 of every file. ``latest`` moves only after
a version is complete. Names never contain ``/`` and match W&B artifact names, so the same product can be logged to
W&B and pulled back from either place.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from sae_sweep.errors import DataError
from sae_sweep.files import (
    atomic_write_text,
    disk_full,
    read_json,
    remove_dead_temps,
    sealed_files,
    sha256_file,
    temp_path,
    verify_files,
)

log = logging.getLogger(__name__)

MANIFEST = "artifact.json"
LATEST = "latest"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Artifact:
    name: str
    version: int
    type: str
    path: Path
    metadata: dict

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise DataError(
            f"artifact name {name!r} is invalid: use letters, digits, '.', '_' and '-' (no '/'), "
            "as W&B artifact names do"
        )
    return name


_MANIFEST_KEYS = {"name": str, "type": str, "version": int, "metadata": dict, "files": dict}


def read_manifest(path: Path) -> dict:
    """``path/artifact.json``, checked whole: every key of the right type and a sha256 for each file listed."""
    fix = "Delete that folder (the other versions stay usable), or rerun the job that makes it."
    if not (path / MANIFEST).is_file():
        raise DataError(f"{path} is not a readable artifact (it has no {MANIFEST}): a version folder that was never "
                        f"sealed, or was edited. {fix}")  # fmt: skip
    manifest = read_json(path / MANIFEST, "the artifact manifest", fix, _MANIFEST_KEYS)
    sealed_files(manifest, path / MANIFEST, "the artifact manifest", fix)
    return manifest


def remake(path: Path, kind: str | None) -> str:
    """How to make a damaged version of a ``kind`` artifact again: stable cores are written by analyze.py, the rest
    are trained."""
    if kind == "sae-core":
        return f"Run analyze.py again, which writes the stable cores anew (or delete {path})."
    return f"Delete that version folder ({path}), or train it again."


def verify(path: Path) -> dict:
    """Read ``path/artifact.json`` and check every file's sha256 against it; return the manifest. A file of the
    folder that the manifest does not list is refused too: an edited manifest must not leave a file unchecked."""
    manifest = read_manifest(path)
    fix = remake(path, manifest.get("type"))
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {MANIFEST}
    if unlisted := sorted(present - set(manifest["files"])):
        raise DataError(f"artifact {manifest['name']}: {path / MANIFEST} lists no sha256 for {unlisted[:3]}: files "
                        f"added after it was sealed, or a manifest edited. Remove those files, or: {fix}")  # fmt: skip
    verify_files(path, manifest["files"], f"artifact {manifest['name']}", fix)
    return manifest


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name[1:]) for p in folder.iterdir() if re.fullmatch(r"v\d+", p.name))

    def save(self, name: str, type: str, write: Callable[[Path], None], metadata: dict | None = None) -> Artifact:
        """Create a new version of ``name``: ``write(folder)`` fills a fresh folder, then it is sealed.

        Sealing records the sha256 of each file in artifact.json, renames the folder to ``v<N>`` and moves
        ``latest``. If ``write`` fails (a full disk, say), the previous versions are untouched.
        """
        check_name(name)
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(folder / "version")  # what a killed save left (never a live one's)
        tmp = temp_path(folder / "version")
        tmp.mkdir()
        try:
            try:
                write(tmp)
            except Exception as exc:
                if disk_full(exc):
                    raise DataError(
                        f"the disk is full: writing a new version of {name} to {self.root} failed ({exc}). "
                        "The previous versions are intact; free some space and rerun."
                    ) from exc
                raise
            files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            with FileLock(str(folder / ".lock")):
                version = (self._versions(name) or [-1])[-1] + 1
                manifest = {
                    "name": name,
                    "type": type,
                    "version": version,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "metadata": metadata or {},
                    "files": files,
                }
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
                final = folder / f"v{version}"
                os.replace(tmp, final)
                atomic_write_text(folder / LATEST, f"v{version}\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.debug("saved artifact %s:v%d to %s", name, version, final)
        return Artifact(name, version, type, final, manifest["metadata"])

    def save_once(
        self, name: str, type: str, same: Callable[[dict], bool], make: Callable[[], tuple[Callable, dict]]
    ) -> tuple[Artifact, bool]:
        """The latest version of ``name`` if ``same(its metadata)``, else a new one; once, even across processes.

        ``make()`` returns the (write, metadata) of ``save`` and is called only when a version must be made. Returns
        (artifact, made here). For products that are a pure function of their settings (an untrained GPT, synthetic
        true features), so that the jobs of a sweep that all need one save it as one version.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f".{check_name(name)}.lock")):
            if name in self.names(type):
                art = self.get(name)
                if same(art.metadata):
                    return art, False
            write, metadata = make()
            return self.save(name, type, write, metadata), True

    def get(self, spec: str, verify_files: bool = True) -> Artifact:
        """Resolve ``name``, ``name:latest``, ``name:v3`` or a folder path to a verified artifact."""
        path = Path(spec).expanduser()
        if (path / MANIFEST).is_file():
            folder = path
        else:
            name, _, alias = spec.partition(":")
            check_name(name)
            versions = self._versions(name)
            if not versions:
                known = ", ".join(sorted(self.names())) or "none"
                raise DataError(f"no artifact {name!r} in the store {self.root} (it holds: {known})")
            alias = alias or LATEST
            have = ", ".join(f"v{v}" for v in versions)
            if alias == LATEST:
                alias = self._latest(name, versions, have)
            folder = self.root / name / alias
            if not re.fullmatch(r"v\d+", alias) or not folder.is_dir():
                raise DataError(f"artifact {name!r} has no version {alias!r} (it has {have}, and latest)")
        manifest = verify(folder) if verify_files else read_manifest(folder)
        return Artifact(manifest["name"], manifest["version"], manifest["type"], folder, manifest["metadata"])

    def _latest(self, name: str, versions: list[int], have: str) -> str:
        """The version ``<name>/latest`` names; a pointer naming no version folder is refused, never guessed past."""
        latest_file = self.root / name / LATEST
        if not latest_file.exists():
            return f"v{versions[-1]}"
        alias = latest_file.read_text(errors="replace").strip()
        if not re.fullmatch(r"v\d+", alias) or not (self.root / name / alias).is_dir():
            raise DataError(
                f"{latest_file} is corrupt: it names {alias[:40]!r}, not one of this artifact's versions ({have}). "
                f"Ask for a version by name ({name}:v{versions[-1]}), or rewrite the pointer: "
                f"echo v{versions[-1]} > {latest_file}"
            )
        return alias

    def names(self, type: str | None = None) -> list[str]:
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.iterdir()):
            versions = self._versions(folder.name)
            if not versions:
                continue
            if type is not None and read_manifest(folder / f"v{versions[-1]}")["type"] != type:
                continue
            out.append(folder.name)
        return out

    def latest_of_type(self, type: str) -> Artifact | None:
        """The most recently created artifact of ``type`` across all names, or None."""
        best = None
        for name in self.names(type):
            art = self.get(name, verify_files=False)
            mtime = art.path.stat().st_mtime_ns
            if best is None or mtime > best[0]:
                best = (mtime, art)
        return None if best is None else self.get(str(best[1].path))


def file_digest(artifact: Artifact, filename: str) -> str:
    """The sha256 of one file of ``artifact``, as its manifest records it."""
    return read_manifest(artifact.path)["files"][filename]


@dataclass(frozen=True)
class Paths:
    """Where products live: ``cache/`` (tokens, activations), ``store/`` (artifacts), ``runs/`` (checkpoints, logs)."""

    root: Path

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def runs(self) -> Path:
        return self.root / "runs"
