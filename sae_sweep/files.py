"""Files written whole: sha256 digests and their check, atomic folders and text files, one build of a product
across racing processes (under a file lock), and telling a full disk from other write errors.

Every product sae-sweep writes (a token or activation cache, a GPT, a dictionary, a report) is built in a temporary
sibling folder and renamed into place, so a reader never sees half of one (``atomic_folder``); a product that
several jobs may want at once is built by one of them under a file lock while the others wait (``build_once``); and
each records the sha256 of its files, checked on load (``verify_files``). The versioned store is ``store.py``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock

from sae_sweep.errors import DataError

log = logging.getLogger(__name__)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def json_digest(obj) -> str:
    """The sha256 (hex) of ``obj`` as sorted-key JSON: the key of a cache or a run, from the settings that shape it."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def read_json(path: Path, what: str, fix: str, keys: dict[str, type | tuple] | None = None) -> dict:
    """``path`` read as a JSON object whose ``keys`` (name -> type) are there and of their type; DataError naming the
    file, ``what`` it is and the ``fix`` otherwise (missing, not UTF-8, not JSON, another shape)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON and bad UTF-8 alike
        raise DataError(f"{what} {path} is unreadable ({type(exc).__name__}: {str(exc)[:80]}). {fix}") from None
    if not isinstance(data, dict):
        wrong = ["(the whole file: not a JSON object)"]
    else:
        wrong = [k for k, tp in (keys or {}).items() if not isinstance(data.get(k), tp)]
    if wrong:
        raise DataError(f"{what} {path} is damaged or edited: {', '.join(wrong)} missing or of the wrong type. {fix}")
    return data


def sealed_files(seal: dict, path: Path, what: str, fix: str, names=()) -> dict[str, str]:
    """The ``files`` of a seal (a cache's meta.json, an artifact's artifact.json): file name -> sha256, every one a
    64-hex digest and ``names`` among them; DataError naming ``path`` otherwise, so that an edited seal cannot leave
    a file unchecked."""
    files = seal.get("files")
    ok = isinstance(files, dict) and all(
        isinstance(d, str) and len(d) == 64 and all(c in "0123456789abcdef" for c in d) for d in files.values()
    )
    missing = sorted(set(names) - set(files)) if ok else []
    if not ok or missing:
        said = f"it lists no sha256 for {missing}" if missing else "its 'files' is not a name -> sha256 table"
        raise DataError(f"{what} {path} is damaged or edited: {said}. {fix}")
    return files


def verify_files(folder: Path, files: dict[str, str], what: str, fix: str) -> None:
    """Check each ``folder/name`` against its recorded sha256; a missing or changed file raises DataError.

    ``what`` names the product in the message ("token cache", "artifact sae-L2-J64-s0") and ``fix`` says what to do.
    """
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{what}: file {path} is missing. {fix}")
        if sha256_file(path) != digest:
            raise DataError(
                f"{what}: file {path} does not match the sha256 recorded for it (truncated or edited). {fix}"
            )


def disk_full(exc: BaseException) -> bool:
    # safetensors reports ENOSPC as its own error type, not as an OSError
    return getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc)


# ------------------------------------------------------------------------------------------- temporary names


def temp_path(final: Path, kind: str = "tmp") -> Path:
    """``.<name>.<kind>-<host>-<pid>-<8 hex>`` beside ``final``: a temporary name that says who writes it, so that
    what a killed writer left can be told from a live writer's work (``remove_dead_temps``)."""
    return final.parent / f".{final.name}.{kind}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_dead_temps(final: Path) -> list[Path]:
    """Delete the temporary siblings of ``final`` (``temp_path``) whose writer was a process of this host that is
    gone (killed mid-write); returns them. Another host's are left alone (its processes cannot be seen from here),
    and so is a live process's, so a writer's work is never taken from under it."""
    removed = []
    host = socket.gethostname()
    for path in final.parent.glob(f".{final.name}.*-{host}-*"):
        who = path.name[len(f".{final.name}.") :]
        kind, _, rest = who.partition("-")
        pid = rest[len(host) + 1 :].split("-")[0]
        if kind not in ("tmp", "old") or not rest.startswith(f"{host}-") or not pid.isdigit() or _alive(int(pid)):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        log.info("removed %s, left by process %s of this host, which is gone", path, pid)
        removed.append(path)
    return removed


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` itself (flock on its descriptor), so no lock file is left in it; where the file
    system refuses that (NFS locks need a file open for writing), a lock file ``.lock`` in it instead."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            with FileLock(str(folder / ".lock")):
                yield
            return
        yield
    finally:
        os.close(fd)  # closing it releases the flock


@contextlib.contextmanager
def atomic_folder(final: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; on success rename it to ``final``, on failure delete it.

    ``replace``: swap out an existing ``final`` (the old one is moved aside first, then deleted), so that ``final``
    is always one whole product; the swap holds a lock on the folder that holds ``final`` (``folder_lock``), so that
    two processes replacing it at once take turns (the last to finish wins) instead of one failing between the two
    renames. Without ``replace`` ``final`` must not exist yet. Whether ``final`` may be replaced at all is the
    caller's question (``outputs.check_output``).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(final)
    tmp = temp_path(final)
    tmp.mkdir()
    try:
        yield tmp
        if not replace:
            os.replace(tmp, final)
            return
        old = temp_path(final, "old")
        with folder_lock(final.parent):
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary name beside ``path``, then rename it over ``path``."""
    tmp = temp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def build_once(final: Path, fill: Callable[[Path], None], ready: str) -> bool:
    """Make the folder ``final`` once, even across processes: True if this call built it, False if it was there.

    Under a file lock beside it, ``final`` counts as built when ``final/ready`` exists; otherwise ``fill(tmp)``
    writes the product into a temporary folder (``ready`` last) and the folder is renamed into place.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{final.name}.lock")):
        if (final / ready).exists():
            return False
        if final.exists():  # a folder without its marker: damaged or edited (ours are renamed into place whole)
            log.warning("%s has no %s (damaged or edited): building it again in its place", final, ready)
            shutil.rmtree(final)  # under the lock; no reader trusts a folder without its marker
        try:
            with atomic_folder(final) as tmp:
                fill(tmp)
        except Exception as exc:
            if disk_full(exc):  # the temporary folder is gone by now: nothing half-built is left to be read
                raise DataError(
                    f"the disk is full: building {final} failed ({exc}); nothing of it was kept, and what was there "
                    "before is intact. Free some space (or point paths.root elsewhere) and rerun."
                ) from exc
            raise
        return True
