"""Output folders a command replaces whole, and the check that it never replaces what it does not own.

analyze.py's report folder (``out_dir``) and each export folder (``OUT/<name>``) are written whole in a temporary
sibling and swapped in (``files.atomic_folder``): whatever the folder held before is deleted. ``check_output`` runs
before any work and refuses, in one line that says what to do instead:

- a path that is, holds or sits inside a folder sae-sweep keeps data in (the store, the caches, the runs, the store
  being read), where the swap would delete them or write a report into them;
- a file (a report or an export is a folder);
- an existing folder that sae-sweep did not write, or that holds entries it did not write (a user's notes added to
  a report folder): it is replaced only when empty, or when its marker (``MARKER``, written last by ``mark``) lists
  every entry in it; a folder written before markers existed is recognised by its files (``legacy``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sae_sweep import __version__
from sae_sweep.errors import ConfigError

MARKER = ".sae-sweep-output.json"


def mark(folder: Path, kind: str) -> None:
    """Record in ``folder`` (a finished output, before its swap) that sae-sweep wrote it, and every entry it holds."""
    entries = sorted(p.name for p in folder.iterdir() if p.name != MARKER)
    record = {"kind": kind, "written_by": f"sae-sweep {__version__}", "entries": entries}
    (folder / MARKER).write_text(json.dumps(record, indent=1) + "\n")


def _relation(path: Path, kept: Path) -> str | None:
    """How ``path`` stands to ``kept`` (both resolved): "is", "sits inside", "holds", or None when apart."""
    if path == kept:
        return "is"
    if kept in path.parents:
        return "sits inside"
    if path in kept.parents:
        return "holds"
    return None


def _foreign_entries(folder: Path, kind: str, legacy: Callable[[list[Path]], bool]) -> list[str]:
    """The entries of an existing ``folder`` that sae-sweep did not write as a ``kind`` output (all of them when it
    did not write the folder at all); [] when it may be replaced."""
    entries = sorted(folder.iterdir())
    if not entries:
        return []
    names = [p.name for p in entries]
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return [] if legacy(entries) else names
    if not isinstance(record, dict) or record.get("kind") != kind or not isinstance(record.get("entries"), list):
        return names
    return [n for n in names if n != MARKER and n not in record["entries"]]


def check_output(
    path: Path,
    kind: str,
    named: str,
    instead: str,
    kept: dict[str, Path],
    legacy: Callable[[list[Path]], bool] = lambda entries: False,
    whole: bool = True,
) -> None:
    """ConfigError unless the ``kind`` output folder ``path`` may be written and replaced whole (module docstring).

    ``named``: how the message names the path (``out_dir=<path>``); ``instead``: what the user can do
    (``give out_dir a new folder``); ``kept``: what each folder that must survive is ("the store", ...) -> its path;
    ``legacy``: True for the entries of a ``kind`` folder written before markers existed; ``whole``: False for a
    folder written into, not replaced (the export's OUT, whose other entries stay), where only the first two apply.
    """
    target = Path(path).expanduser().resolve()
    for what, folder in kept.items():
        how = _relation(target, Path(folder).expanduser().resolve())
        if how is not None:
            raise ConfigError(
                f"{named} {how} {what} ({folder}): writing the {kind} there would replace or mix with what is kept "
                f"there; {instead}, outside it"
            )
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{named} is a file: the {kind} is a folder, and writing it would delete the file; {instead}")
    if whole and target.is_dir() and (foreign := _foreign_entries(target, kind, legacy)):
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(
            f"{named} holds what sae-sweep did not write there ({shown}); the {kind} replaces its folder whole, "
            f"which would delete them: {instead}, or move them out first"
        )
