"""A training run's folder: atomic, checksummed checkpoints, the resume rule and the done marker.

Both training stages (pretrain.py, sae_stage.py) use these, so reruns behave the same everywhere: an unfinished run
resumes from ``checkpoints/last.ckpt``, a finished one returns its artifact, ``force`` starts afresh.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sae_sweep.errors import DataError
from sae_sweep.files import atomic_write_text, disk_full, sha256_file
from sae_sweep.store import Artifact, ArtifactStore

log = logging.getLogger(__name__)
CKPT_DIR = "checkpoints"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary name and rename it, so a kill never leaves a torn last.ckpt, and record
    its sha256 beside it (``last.ckpt.sha256``) so a truncated or edited checkpoint is refused on resume."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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
        os.replace(tmp, path)  # killed between the renames: the old digest refuses it
        atomic_write_text(_digest_path(path), digest + "\n")


def _digest_path(ckpt: Path) -> Path:
    return ckpt.with_name(ckpt.name + ".sha256")


def verify_checkpoint(ckpt: Path) -> Path:
    """Check ``ckpt`` against the sha256 written beside it; a checkpoint without one (not ours) is accepted."""
    digest_file = _digest_path(ckpt)
    if digest_file.exists() and sha256_file(ckpt) != digest_file.read_text().strip():
        raise DataError(
            f"checkpoint {ckpt} does not match the sha256 in {digest_file.name} (truncated, edited, or cut off by a "
            f"kill mid-save). Delete {ckpt.parent} to start this run over, or pass ckpt_path=null."
        )
    return ckpt


def last_checkpoint(run_dir: Path) -> Path | None:
    path = run_dir / CKPT_DIR / "last.ckpt"
    return path if path.is_file() else None


# ------------------------------------------------------------------------------------- a run's folder

DONE_FILE = "done.json"


def finished_artifact(run_dir: Path, store: ArtifactStore, force: bool) -> Artifact | None:
    """The artifact a finished run left (None if unfinished); with ``force``, forget the run and start afresh."""
    done = run_dir / DONE_FILE
    if done.exists() and not force:
        ref = json.loads(done.read_text())["artifact"]
        log.info("%s already finished as %s; pass force=true to train a new version", run_dir.name, ref)
        return store.get(ref)
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


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
    return verify_checkpoint(path)
