"""W&B lineage: the exact artifact versions a run used, declared online, recorded for runs made offline, replayed later.

W&B links products in its artifact graph only through a run's ``use_artifact`` (inputs) and ``log_artifact``
(outputs), and refuses ``use_artifact`` offline. Every artifact this project logs carries, besides ``latest``, the
aliases ``store-v<N>`` (its version in the local store) and ``sha-<12 hex>`` (a digest of its files' sha256s, so the
same bytes carry the same alias on any machine). Inputs are named by the latter: the reference names exactly the
bytes the run read, whatever number W&B gave the version.

``declare_inputs`` calls ``use_artifact`` for each input of an online run, and writes every input to
``<run folder>/lineage/<W&B run id>.json`` with those it could declare. Whatever is left (an offline run, an input not
on the server yet) is declared later through the public API by ``replay``: ``python -m sae_sweep.sync`` runs it after
``wandb sync`` has uploaded the runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from sae_sweep.errors import DataError
from sae_sweep.files import atomic_write_text, read_json
from sae_sweep.store import Artifact, read_manifest

log = logging.getLogger(__name__)

LINEAGE_DIR = "lineage"


def content_alias(folder: Path) -> str:
    """``sha-<12 hex>``: a digest of the sha256 of every file of a store version (from its artifact.json)."""
    files = read_manifest(Path(folder))["files"]
    return "sha-" + hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]


def aliases(artifact: Artifact, extra: tuple[str, ...] = ()) -> list[str]:
    """The W&B aliases of a store artifact: latest, its store version, its content, and ``extra``."""
    return ["latest", f"store-v{artifact.version}", content_alias(artifact.path), *extra]


def reference(folder: Path) -> str | None:
    """``name:sha-…``, the W&B reference to a store version's exact bytes; None for a folder outside a store."""
    try:
        return f"{read_manifest(Path(folder))['name']}:{content_alias(folder)}"
    except (DataError, KeyError):  # no artifact.json (a foreign dictionary): nothing on W&B to point at
        return None


def record_path(run_folder: Path, run_id: str) -> Path:
    return Path(run_folder) / LINEAGE_DIR / f"{run_id}.json"


def declare_inputs(run, refs: list[str], run_folder: Path) -> list[str]:
    """Declare ``refs`` as inputs of the W&B ``run`` (online only) and record them all under ``run_folder``;
    returns the references declared now. One that W&B refuses is warned about and left for ``replay``."""
    declared = []
    if not run.offline:
        for ref in refs:
            try:
                run.use_artifact(ref)
                declared.append(ref)
            except Exception as exc:  # noqa: BLE001 - lineage must never cost a run its results
                log.warning(
                    "W&B could not link input %s to run %s now (%s: %s); it is recorded, and "
                    "`python -m sae_sweep.sync` links it once the input is on the server",
                    ref, run.id, type(exc).__name__, exc,
                )  # fmt: skip
    record = {"run_id": run.id, "entity": run.entity or None, "project": run.project,
              "inputs": list(refs), "declared": declared}  # fmt: skip
    path = record_path(run_folder, run.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return declared


def pending_records(root: Path) -> list[Path]:
    """Every lineage record under ``root`` with inputs not yet declared. A finished run's folder (``done.json``) with
    W&B runs but no record (a run writes one as it saves) lost it: DataError naming it, before anything is linked."""
    for wandb_dir in sorted(Path(root).glob("*/wandb")):
        finished = (wandb_dir.parent / "done.json").is_file()
        if finished and not list((wandb_dir.parent / LINEAGE_DIR).glob("*.json")):
            raise DataError(
                f"{wandb_dir.parent} has W&B runs but no lineage record in {LINEAGE_DIR}/ (deleted?), so the inputs "
                f"of its runs cannot be linked: rerun the job that made it, or delete {wandb_dir} to leave it out"
            )
    found = []
    for path in sorted(Path(root).rglob(f"{LINEAGE_DIR}/*.json")):
        rec = read_record(path)
        if set(rec["inputs"]) - set(rec["declared"]):
            found.append(path)
    return found


def read_record(path: Path) -> dict:
    """A lineage record, checked whole (DataError naming it otherwise)."""
    keys = {"run_id": str, "project": str, "inputs": list, "declared": list}
    fix = "Delete it (that run's inputs are then not linked on W&B), or rerun the job that wrote it."
    rec = read_json(path, "the lineage record", fix, keys)
    if not all(isinstance(r, str) for r in rec["inputs"] + rec["declared"]) or not isinstance(
        rec.get("entity"), str | None
    ):
        raise DataError(f"the lineage record {path} is damaged or edited: its entity or inputs are not names. {fix}")
    return rec


def replay(api, root: Path, entity: str | None = None, project: str | None = None) -> tuple[int, int]:
    """Declare every recorded, undeclared input under ``root`` through the public ``api`` (``wandb.Api()``);
    ``entity``/``project`` override the recorded ones (as ``wandb sync -e/-p`` would have). Returns (declared,
    failed); each failure is warned about with its reason and stays recorded for the next replay."""
    done = failed = 0
    for path in pending_records(root):
        rec = read_record(path)
        where = "/".join(p for p in (entity or rec.get("entity") or api.default_entity, project or rec["project"]) if p)
        try:
            run = api.run(f"{where}/{rec['run_id']}")
        except Exception as exc:  # noqa: BLE001
            log.warning("run %s/%s is not on W&B (%s); sync it first (`wandb sync`)", where, rec["run_id"], exc)
            failed += len(set(rec["inputs"]) - set(rec["declared"]))
            continue
        for ref in [r for r in rec["inputs"] if r not in rec["declared"]]:
            try:
                run.use_artifact(api.artifact(f"{where}/{ref}"))
                rec["declared"].append(ref)
                done += 1
            except Exception as exc:  # noqa: BLE001
                log.warning("could not link %s to run %s (%s: %s)", ref, rec["run_id"], type(exc).__name__, exc)
                failed += 1
        atomic_write_text(path, json.dumps(rec, indent=2) + "\n")
    return done, failed
