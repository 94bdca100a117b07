"""A training run's folder: atomic, checksummed checkpoints, the resume rule and the done marker.

Both training stages (pretrain.py, sae_stage.py) use these, so reruns behave the same everywhere: an unfinished run
resumes from ``checkpoints/last.ckpt``, a finished one returns its artifact, ``force`` starts afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sae_sweep.errors import DataError
from sae_sweep.files import atomic_write_text, disk_full, read_json, remove_dead_temps, sha256_file, temp_path
from sae_sweep.store import Artifact, ArtifactStore

log = logging.getLogger(__name__)
CKPT_DIR = "checkpoints"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary name and rename it, so a kill never leaves a torn last.ckpt, and record
    its sha256 beside it (``last.ckpt.sha256``) so a truncated or edited checkpoint is refused on resume."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(path)  # a killed save's torn temporary file
        tmp = temp_path(path)
        buffer = io.BytesIO()  # serialised in memory first: torch.save's zip writer hides ENOSPC in a RuntimeError
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # a torn temporary file is never left where a resume might look
            if disk_full(exc):
                raise DataError(
                    f"the disk is full: writing checkpoint {path} failed ({exc}); the previous checkpoint, if any, is "
                    "intact. Free some space (or point paths.root elsewhere) and rerun to resume from it."
                ) from exc
            raise
        digest = hashlib.sha256(data).hexdigest()
        # Checkpoint and digest as one unit: the digest file names the new and the old checkpoint before the rename
        # and the new one alone after it, so a kill at any moment leaves a checkpoint that one of its lines accepts.
        digest_file = _digest_path(path)
        before = digest_file.read_text().split()[:1] if digest_file.exists() and path.exists() else []
        atomic_write_text(digest_file, "\n".join([digest, *before]) + "\n")
        os.replace(tmp, path)
        atomic_write_text(digest_file, digest + "\n")


def _digest_path(ckpt: Path) -> Path:
    return ckpt.with_name(ckpt.name + ".sha256")


def verify_checkpoint(ckpt: Path, required: bool = True) -> Path:
    """Check ``ckpt`` against the sha256 written beside it (any of its lines: see AtomicCheckpointIO).

    ``required``: a checkpoint without a digest is refused (a run's own ``last.ckpt``, whose digest is always
    written before it); a checkpoint named by the user (``ckpt_path=<file>``) may come without one.
    """
    digest_file = _digest_path(ckpt)
    if not digest_file.exists():
        if not required:
            return ckpt
        raise DataError(
            f"checkpoint {ckpt} has no {digest_file.name} beside it, so it cannot be checked (the digest is written "
            f"before every checkpoint: it was deleted). Delete {ckpt.parent} to start this run over, or resume from "
            f"it unchecked with ckpt_path={ckpt}."
        )
    if sha256_file(ckpt) not in digest_file.read_bytes().decode("ascii", errors="replace").split():
        raise DataError(
            f"checkpoint {ckpt} does not match the sha256 in {digest_file.name} (truncated or edited). "
            f"Delete {ckpt.parent} to start this run over, or pass ckpt_path=null."
        )
    return ckpt


def last_checkpoint(run_dir: Path) -> Path | None:
    path = run_dir / CKPT_DIR / "last.ckpt"
    return path if path.is_file() else None


# ------------------------------------------------------------------------------------- a run's folder

DONE_FILE = "done.json"


def finished_artifact(run_dir: Path, store: ArtifactStore, force: bool, name: str | None = None) -> Artifact | None:
    """The artifact a finished run left (None if unfinished); with ``force``, forget the run and start afresh.

    ``name``: the artifact the run saves; a version of it that this run saved (its ``run_id``) counts as the run's
    result even without the done marker (a job stopped between the two), so that no rerun saves it twice.
    """
    if not force and (done := _recorded_result(run_dir, store, name)) is not None:
        log.info("%s already finished as %s; pass force=true to train a new version", run_dir.name, done.ref)
        return done
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = _saved_by(run_dir.name, store, name) if name and not force else None
    if saved is not None:
        log.info("%s already saved %s (it stopped before recording it); using that", run_dir.name, saved.ref)
        mark_finished(run_dir, saved)
    return saved


def _recorded_result(run_dir: Path, store: ArtifactStore, name: str | None) -> Artifact | None:
    """The version ``done.json`` names, verified; None when there is no marker, or when it is damaged or names a
    version this run did not save (then said, and the run's own version is looked for by its run id instead). A
    damaged version it names is refused by the store, naming the version's file."""
    done = run_dir / DONE_FILE
    if not done.exists():
        return None
    try:
        ref = read_json(done, "completion marker", "", {"artifact": str})["artifact"]
    except DataError as exc:
        return _set_aside(done, str(exc))
    ref_name, _, version = ref.partition(":")
    if (name and ref_name != name) or not version or not (store.root / ref_name / version).is_dir():
        return _set_aside(done, f"it names {ref[:60]!r}, not a version of {name or 'this run'} in {store.root}")
    saved_by = store.get(ref, verify_files=False).metadata.get("run_id", run_dir.name)
    if saved_by != run_dir.name:
        return _set_aside(done, f"it names {ref}, which run {saved_by} saved, not this one")
    return store.get(ref)  # every file checked against its sha256


def _set_aside(done: Path, why: str) -> None:
    log.warning("%s is not this run's completion marker (%s): looking for the version the run saved instead",
                done, why.rstrip(". "))  # fmt: skip
    done.unlink()


def _saved_by(run_id: str, store: ArtifactStore, name: str) -> Artifact | None:
    """The newest version of ``name`` whose metadata says ``run_id`` saved it, verified; None if none."""
    for version in reversed(store._versions(name)):
        art = store.get(f"{name}:v{version}", verify_files=False)
        if art.metadata.get("run_id") == run_id:
            return store.get(art.ref)  # every file checked against its sha256
    return None


# ------------------------------------------------------------------------------------- one owner per run folder

OWNER_FILE = "owner.json"


def _other_rank() -> bool:
    """Whether this process is a rank other than 0 of a multi-process job (plain DDP: every rank runs the job)."""
    ranks = [os.environ.get(k, "0") for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID")]
    return any(r.isdigit() and int(r) > 0 for r in ranks)


@contextlib.contextmanager
def owned(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for this job while it trains and saves: a second job with the same settings (the same run
    folder) is refused at once, naming the owner (host, PID, start), instead of training beside it.

    The hold is an OS lock (``flock``) on ``runs/.<run>.lock``, which the kernel releases when its process ends, kill
    -9 included, so a dead owner's folder is taken over by the next job (on a shared file system through its lock
    manager, across hosts). The owner's details are in ``runs/.<run>.owner.json``, only to be named.
    """
    if _other_rank():  # rank 0 holds it for the whole job
        yield
        return
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir.parent / f".{run_dir.name}.lock"), timeout=0)
    owner_file = run_dir.parent / f".{run_dir.name}.{OWNER_FILE}"
    try:
        lock.acquire()
    except Timeout:
        raise DataError(f"run folder {run_dir} is in use by {_owner(owner_file)}: another job with the same settings "
                        "is training it. Wait for it to finish (this command then reuses its result), or stop that "
                        "job first.") from None  # fmt: skip
    try:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        atomic_write_text(owner_file, json.dumps(me) + "\n")
        yield
    finally:
        owner_file.unlink(missing_ok=True)
        lock.release()


def _owner(owner_file: Path) -> str:
    try:
        o = json.loads(owner_file.read_text())
        return f"process {o['pid']} on {o['host']}, started {o['started']}"
    except (OSError, ValueError, KeyError):
        return "another process (its details are not written yet)"


def mark_finished(run_dir: Path, artifact: Artifact) -> None:
    atomic_write_text(run_dir / DONE_FILE, json.dumps({"artifact": artifact.ref, "path": str(artifact.path)}) + "\n")


def resolve_checkpoint(ckpt_path: str | None, run_dir: Path) -> Path | None:
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        last = last_checkpoint(run_dir)
        return None if last is None else verify_checkpoint(last)
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise DataError(f"ckpt_path={ckpt_path!r} is not a file; use ckpt_path=last to resume this run, or null")
    return verify_checkpoint(path, required=False)
