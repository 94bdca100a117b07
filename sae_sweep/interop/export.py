"""Export a whole sweep as SAELens folders: ``python -m sae_sweep.interop.export STORE OUT``.

Every dictionary of every layer found under STORE (a store, or any folder of dictionary folders; the latest version
of each name) becomes ``OUT/<name>/``, a folder ``sae_lens.SAE.load_from_disk`` opens. Dictionaries written by this
version already hold that folder as ``saelens/`` and it is copied; older ones (all ReLU + L1, written before the
other architectures existed) are converted from their weights, with the GPT's context size and corpus read from the
store when it holds the GPT. Each export is written to a temporary
folder and renamed into place, so OUT never holds half an export; an existing ``OUT/<name>`` is replaced whole.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from sae_sweep.dictionary import DICTIONARY_TYPE, load_dictionary
from sae_sweep.errors import DataError, SaeSweepError
from sae_sweep.files import atomic_folder
from sae_sweep.interop import saelens
from sae_sweep.store import MANIFEST, ArtifactStore

log = logging.getLogger(__name__)


def _latest_dictionaries(root: Path) -> dict[str, Path]:
    """name -> folder of the newest version of every dictionary under ``root``."""
    found: dict[str, tuple[int, Path]] = {}
    for path in sorted(root.rglob(MANIFEST)):
        manifest = json.loads(path.read_text())
        if manifest.get("type") != DICTIONARY_TYPE:
            continue
        name, version = manifest["name"], int(manifest.get("version", 0))
        if name not in found or version > found[name][0]:
            found[name] = (version, path.parent)
    return {name: folder for name, (_, folder) in sorted(found.items())}


def _gpt_metadata(root: Path, ref: str | None) -> dict | None:
    """The metadata of the GPT artifact ``ref`` when ``root`` is the store that holds it, else None."""
    if ref is None:
        return None
    try:
        return ArtifactStore(root).get(ref, verify_files=False).metadata
    except (SaeSweepError, OSError, KeyError, ValueError):
        return None


def _older(d) -> None:
    """A dictionary without its SAELens copy was written before the SAE stage wrote one, when every SAE was ReLU + L1
    (SAELens' ``standard``); one of another architecture lost its copy, and is refused rather than mis-exported."""
    arch = d.config.sae.get("arch", "relu")
    if arch != "relu":
        raise DataError(
            f"{d.path} (sae.arch={arch}) has no {saelens.SAELENS_DIR}/ folder, which the SAE stage writes with every "
            "dictionary: the folder was edited. Train it again (`python train.py ... force=true`)."
        )


def export_sweep(root: str | Path, out: str | Path) -> list[Path]:
    """Write ``out/<name>/`` as a SAELens folder for every dictionary under ``root``; return the folders written."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: give the store (paths.root/store) or a folder of dictionaries")
    chosen = _latest_dictionaries(root)
    if not chosen:
        raise DataError(f"no dictionaries under {root}: train some first (`python train.py -m experiment=demo`)")
    written = []
    for name, folder in chosen.items():
        d = load_dictionary(folder)  # checks every file's digest
        with atomic_folder(out / name, replace=True) as tmp:
            if saelens.is_saelens_folder(folder / saelens.SAELENS_DIR):
                shutil.copytree(folder / saelens.SAELENS_DIR, tmp, dirs_exist_ok=True)
            else:
                _older(d)
                gpt = _gpt_metadata(root, d.config.gpt_artifact)
                saelens.write(tmp, d.tensors, d.config, d.firing_counts, saelens.Standard(), gpt)
        written.append(out / name)
        log.info("exported %s to %s", name, out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sae_sweep.interop.export",
        description="Write every dictionary under STORE as a SAELens folder OUT/<name>/ (the latest version of each).",
        epilog="With sae-lens installed: from sae_lens import SAE; SAE.load_from_disk('OUT/sae-L2-J1024-s0')",
    )
    ap.add_argument("store", help="a store (e.g. sae_sweep_out/store) or any folder of dictionary folders")
    ap.add_argument("out", help="the folder to write one SAELens folder per dictionary into")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        written = export_sweep(args.store, args.out)
    except SaeSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(written)} dictionaries exported to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
