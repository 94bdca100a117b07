"""A training run's folder: atomic, checksummed checkpoints, the resume rule, the done marker and the W&B finish.

Both training stages (pretrain.py, sweep.py) use these, so reruns behave the same everywhere: an unfinished run
resumes from ``checkpoints/last.ckpt``, a finished one returns its artifact, ``force`` starts afresh.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sae_sweep import DataError
from sae_sweep.data import sha256_file

if TYPE_CHECKING:
    from sae_sweep.artifacts import Artifact, ArtifactStore

log = logging.getLogger(__name__)
CKPT_DIR = "checkpoints"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary name and rename it, so a kill never leaves a torn last.ckpt, and record
    its sha256 beside it (``last.ckpt.sha256``) so a truncated or edited checkpoint is refused on resume."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save(checkpoint, tmp)
        digest_tmp = path.with_name(f".{path.name}.sha256.tmp-{os.getpid()}")
        digest_tmp.write_text(sha256_file(tmp) + "\n")
        os.replace(tmp, path)
        os.replace(digest_tmp, _digest_path(path))


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
    (run_dir / DONE_FILE).write_text(json.dumps({"artifact": artifact.ref, "path": str(artifact.path)}) + "\n")


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


def finish_wandb(
    loggers: list, artifact: Artifact, summary: dict | None = None, uses: str | None = None, density=None
) -> None:
    """Upload the artifact to the W&B run (if any), record lineage and summary, close it, say how to sync.

    ``uses``: the name of an input artifact (the GPT of a dictionary), linked when online. ``density``: (firing
    counts, n) for a histogram of log10 feature frequency. A W&B failure here, or one earlier in the run, is warned
    about and never fatal: the artifact is already safe in the local store.
    """
    from lightning.pytorch.loggers import WandbLogger  # noqa: PLC0415

    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        if getattr(lg, "failure", None) is not None:  # W&B was switched off mid-run (already warned about)
            log.warning(
                "W&B has been off since it failed (%s): %s is kept locally at %s",
                lg.failure,
                artifact.ref,
                artifact.path,
            )
            continue
        try:
            run = lg.experiment
            offline = bool(run.offline)
            run_dir = Path(run.dir).parent
            _log_to_run(run, artifact, summary, uses if not offline else None, density)
            run.finish()
        except Exception as exc:  # noqa: BLE001 - W&B trouble must never lose a finished local artifact
            if hasattr(lg, "fail"):
                lg.fail(f"uploading the artifact {artifact.ref}", exc)
            else:
                log.warning(
                    "W&B logging failed (%s: %s); the artifact is safe at %s", type(exc).__name__, exc, artifact.path
                )
            continue
        if offline:
            log.info("W&B run kept offline at %s; upload it with: wandb sync %s", run_dir, run_dir)


def _log_to_run(run, artifact: Artifact, summary: dict | None, uses: str | None, density) -> None:
    from sae_sweep.artifacts import log_to_wandb  # noqa: PLC0415

    if uses:
        run.use_artifact(uses)
    if summary:
        run.summary.update(summary)
    if density is not None:
        import numpy as np  # noqa: PLC0415
        import wandb  # noqa: PLC0415

        counts, n = density
        live = counts[counts > 0]
        if live.size:
            run.log({"feature_density/log10_frequency": wandb.Histogram(np.log10(live / n))})
    log_to_wandb(run, artifact)
