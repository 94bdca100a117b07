"""Does a change keep behaviour frozen? Build one fixed set of products with two trees and compare them file by file.

    python benchmarks/same_outputs.py ffba3f6            # that commit against this checkout
    python benchmarks/same_outputs.py ffba3f6 --keep /tmp/same   # keep both roots; a rerun reuses the commit's

For each tree (the commit, checked out into a temporary git worktree, and this checkout) the script runs, in fresh
processes that import that tree's ``sae_sweep``, the same commands into an empty ``SAE_SWEEP_ROOT``: a smoke GPT;
ReLU SAEs at three sizes on two seeds with budget snapshots; the four controls; synthetic data at three sizes on two
seeds; TopK, BatchTopK and JumpReLU on two sizes and two seeds; then ``analyze.py`` and a SAELens export. Every
section of the report gets rows. It then prints every file of the store (dictionaries, caches, the GPT), of the
analysis folder (CSVs, report.md, findings.md, figures, mcs.npz) and of the export whose sha256 differs between the
two trees, or is in one only, and exits 1 if any does. Run folders (checkpoints, metrics) are not compared: their
names are digests of the configs, which the store's config.json files already cover. About a minute a tree on 2
cores (measured 2026-12-04).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SMOKE = ["experiment=smoke", "logger=none", "hydra/launcher=basic", "sae.snapshot_first=4096"]
COMMANDS = [  # (script, arguments): run in order, each must exit 0
    ("train.py", ["stage=pretrain", *SMOKE]),
    ("train.py", ["-m", *SMOKE, "sae.dict_size=64,128,256", "sae.seed=0,1"]),
    ("train.py", ["-m", *SMOKE, "control=untrained,resample,small_l1,transpose_init", "sae.dict_size=64,128"]),
    (
        "train.py",
        [
            "-m",
            *SMOKE[1:],
            "data=synthetic",
            "data.n_features=64",
            "harvest.n_tokens=20480",
            "harvest.n_val_tokens=4096",
            "sae.epochs=1",
            "sae.until=budget",
            "sae.l1_coeff=5e-3",
            "sae.dict_size=32,64,128",
            "sae.seed=0,1",
        ],
    ),  # fmt: skip
    (
        "train.py",
        [
            "-m",
            *SMOKE,
            "sae.arch=topk,batchtopk,jumprelu",
            "sae.k=8",
            "sae.dict_size=64,128",
            "sae.seed=0,1",
            "sae.tag=onepass",
        ],
    ),  # fmt: skip
    ("train.py", ["-m", *SMOKE, "sae.dict_size=64,128,256", "sae.seed=0,1", "sae.tag=onepass"]),
    ("analyze.py", ["logger=none", "analysis.n_boot=50", "analysis.n_perm=50"]),
    ("-m", ["sae_sweep.interop.export", "{root}/store", "{root}/export"]),
]
COMPARED = ("store", "analysis", "export")  # folders under the root whose every file is compared


def build(tree: Path, root: Path, reuse: bool) -> None:
    """Run COMMANDS with ``tree``'s code into an empty ``root``; with ``reuse``, a finished root (its marker written)
    is kept as it is."""
    done = root / ".same_outputs_done"
    if reuse and done.exists():
        print(f"{root}: already built, reused", flush=True)
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {**os.environ, "SAE_SWEEP_ROOT": str(root), "PYTHONPATH": str(tree), "WANDB_MODE": "offline"}
    for script, args in COMMANDS:
        cmd = [sys.executable, *([script] if script == "-m" else [str(tree / script)])]
        cmd += [a.format(root=root) for a in args]
        print(f"[{tree.name}] {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"failed in {tree}: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    done.write_text("ok\n")


def _without_times(value):
    """A JSON value with every "created" timestamp taken out (the one field a rerun changes)."""
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k != "created"}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _content(path: Path) -> bytes:
    """What is compared of a file: its bytes, or for JSON its content less "created" (and, in a manifest, less the
    digests of JSON files, which hold a "created" of their own and are compared themselves)."""
    if path.suffix != ".json":
        return path.read_bytes()
    value = _without_times(json.loads(path.read_text()))
    if path.name == "artifact.json":
        value["files"] = {k: v for k, v in value.get("files", {}).items() if not k.endswith(".json")}
    return json.dumps(value, sort_keys=True).encode()


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under the compared folders of ``root`` (``_content``), by path relative to it."""
    out = {}
    for folder in COMPARED:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(root))] = hashlib.sha256(_content(path)).hexdigest()
    return out


def compare(a: dict[str, str], b: dict[str, str]) -> list[str]:
    lines = []
    for name in sorted(a.keys() | b.keys()):
        if name not in a or name not in b:
            lines.append(f"only in {'the commit' if name in a else 'this checkout'}: {name}")
        elif a[name] != b[name]:
            lines.append(f"differs: {name}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("commit", help="the earlier commit (any git revision)")
    ap.add_argument("--keep", type=Path, help="build the two roots here and keep them (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        worktree = Path(tmp) / "commit"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.commit], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            build(worktree, base / "commit", reuse=True)
            build(ROOT, base / "checkout", reuse=False)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
        a, b = digests(base / "commit"), digests(base / "checkout")
        diff = compare(a, b)
    print("\n".join(diff) if diff else f"identical: {len(a)} files under {', '.join(COMPARED)}")
    sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
