"""Upload a root's offline W&B runs and link them in W&B's artifact graph: ``python -m sae_sweep.sync [ROOT]``.

W&B refuses ``use_artifact`` offline, so runs made offline reach the server with their artifacts but no inputs: the
GPT, the dictionaries and the analysis stand unconnected. Every run records its inputs under its run folder
(``lineage/<run id>.json``, lineage.py); this command

1. uploads every offline run folder under ``ROOT/runs`` with ``wandb sync`` (which skips those already synced, and
   uploads the parts of a resumed job, one folder per start under one run id, in order as that one run), then
2. declares each recorded input that is not declared yet through W&B's public API (``Run.use_artifact``), by its
   exact reference ``<name>:sha-<digest>``, and records that it did.

Run it again at any time: what is done is skipped. Needs the internet and a W&B login (``wandb login``).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sae_sweep.errors import SaeSweepError
from sae_sweep.lineage import pending_records, replay
from sae_sweep.tracking import wandb_api

log = logging.getLogger(__name__)


def offline_folders(root: Path) -> list[Path]:
    """Every offline W&B run folder under ``root/runs``, in start order."""
    found = [p for p in (Path(root) / "runs").glob("**/wandb/offline-run-*") if p.is_dir()]
    return sorted(found, key=lambda p: p.name)


def upload(folders: list[Path], entity: str | None, project: str | None) -> int:
    """``wandb sync`` of ``folders``; its exit status."""
    cmd = [sys.executable, "-m", "wandb", "sync", "--yes"]
    cmd += [*(["-e", entity] if entity else []), *(["-p", project] if project else [])]
    return subprocess.run([*cmd, *map(str, folders)], check=False).returncode


def main(argv: list[str] | None = None, api=None, uploader=upload) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sae_sweep.sync",
        description="Upload the offline W&B runs under ROOT (wandb sync), then link each run to the artifacts it "
        "used (the GPT of a dictionary, the dictionaries of an analysis), which W&B cannot record offline.",
    )
    ap.add_argument("root", nargs="?", default="sae_sweep_out", help="paths.root of the runs (default %(default)s)")
    ap.add_argument("-e", "--entity", help="upload to this entity (default: yours)")
    ap.add_argument("-p", "--project", help="upload to this project (default: the one each run was made for)")
    ap.add_argument("--no-upload", action="store_true", help="only link inputs, for runs already synced")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(args.root)
    if not (root / "runs").is_dir():
        print(f"error: {root / 'runs'} does not exist: ROOT is what train.py writes (paths.root)", file=sys.stderr)
        return 2
    folders = [] if args.no_upload else offline_folders(root)
    if folders:
        parts = Counter(f.name for p in folders for f in p.glob("run-*.wandb"))  # run-<run id>.wandb
        resumed = sum(n > 1 for n in parts.values())
        log.info("uploading %d offline run folders (%d runs, %d of them resumed)", len(folders), len(parts), resumed)
        if (code := uploader(folders, args.entity, args.project)) != 0:
            print(f"error: `wandb sync` failed (exit status {code}); nothing was linked. Log in "
                  "(`wandb login`) and check the connection, then run this again.", file=sys.stderr)  # fmt: skip
            return 2
    try:
        pending = pending_records(root / "runs")
    except SaeSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not pending:
        print("every recorded input is linked")
        return 0
    try:
        api = api or wandb_api(f"linking {len(pending)} recorded inputs to their W&B runs")
    except SaeSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done, failed = replay(api, root / "runs", args.entity, args.project)
    left = f"; {failed} could not be linked (named above): run this again later" if failed else ""
    print(f"linked {done} inputs{left}")
    return 0 if not failed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(
            "interrupted (Ctrl-C): what was uploaded and linked so far stays on W&B; run it again to do the rest",
            file=sys.stderr,
        )
        sys.exit(130)
