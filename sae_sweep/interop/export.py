"""Export a whole sweep as SAELens folders: ``python -m sae_sweep.interop.export STORE OUT``.

Every dictionary of every layer found under STORE (a store, or any folder of dictionary folders; the latest version
of each name) becomes ``OUT/<name>/``, a folder ``sae_lens.SAE.load_from_disk`` opens. Dictionaries written by this
version already hold that folder as ``saelens/`` and it is copied; older ones (all ReLU + L1, written before the
other architectures existed) are converted from their weights, with the GPT's context size and corpus read from the
store when it holds the GPT. Each export is written to a temporary
folder and renamed into place, so OUT never holds half an export; an existing ``OUT/<name>`` is replaced whole, but
only where an export wrote it (its marker lists every file in it; ``outputs.py``), and OUT may not be a file or lie
in, or hold, the store exported: both are refused before anything is written. Nothing else is left in OUT.

Per-latent scores. Where an analysis of these dictionaries is found (``--scores``, by default STORE's sibling
``analysis/``), each export gets ``latent_scores.csv``, its dictionary's rows of the analysis's latent_scores.csv
(verdict, p, q, replications, stability, firing frequency, family, parent, core latent; one row per latent, in
order), and ``latent_scores.json``, which analysis they come from and what it compared: the scores depend on which
dictionaries were analysed together. SAELens loads a folder by its cfg.json and safetensors files and ignores both.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
from pathlib import Path

from sae_sweep.dictionary import SAE_WEIGHTS_FILE, load_dictionary
from sae_sweep.dictionary_folders import latest_dictionaries
from sae_sweep.errors import DataError, SaeSweepError
from sae_sweep.files import atomic_folder, read_json, sha256_file
from sae_sweep.interop import saelens
from sae_sweep.outputs import check_output, mark
from sae_sweep.store import ArtifactStore, verify

log = logging.getLogger(__name__)


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


SCORES, SCORES_META = "latent_scores.csv", "latent_scores.json"  # analysis/products.py writes both
SCORES_SHA256 = "csv_sha256"  # the key of latent_scores.json that holds the CSV's sha256 (as products.py writes it)


def read_scores(folder: Path | None) -> tuple[dict[str, list[dict]], dict]:
    """(dictionary name -> its rows, the analysis's latent_scores.json) from an analysis folder; nothing for None.
    The CSV must match the sha256 its JSON records (an analysis writes both), so an edited score is refused."""
    if folder is None:
        return {}, {}
    if not (folder / SCORES).is_file() or not (folder / SCORES_META).is_file():
        raise DataError(
            f"{folder} holds no {SCORES} with its {SCORES_META}: give the folder analyze.py wrote "
            "(paths.root/analysis, after `python analyze.py`), or leave out --scores"
        )
    fix = "Run analyze.py again, or leave out the scores (--no-scores)."
    meta = read_json(folder / SCORES_META, "the latent scores' record", fix, {SCORES_SHA256: str})
    if sha256_file(folder / SCORES) != meta[SCORES_SHA256]:
        raise DataError(f"{folder / SCORES} does not match the sha256 in {SCORES_META} (truncated or edited). {fix}")
    by_name: dict[str, list[dict]] = {}
    with open(folder / SCORES, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_name.setdefault(row.pop("name"), []).append(row)
    return by_name, {"analysis": str(folder.resolve()), **meta}


def _write_scores(folder: Path, rows: list[dict], meta: dict) -> None:
    with open(folder / SCORES, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {**meta, SCORES_SHA256: sha256_file(folder / SCORES)}  # this folder's rows, not the whole analysis's
    (folder / SCORES_META).write_text(json.dumps(meta, indent=2) + "\n")


def _check_rows(chosen: dict[str, Path], by_name: dict[str, list[dict]], meta: dict) -> None:
    """DataError when the scores of a dictionary do not have a row per latent: they were made from another version."""
    for name, folder in chosen.items():
        rows = by_name.get(name)
        size = json.loads((folder / "config.json").read_text()).get("dict_size") if rows is not None else None
        if rows is not None and len(rows) != size:
            raise DataError(
                f"{meta['analysis']}/{SCORES} has {len(rows)} rows for {name}, which has {size} latents: that "
                "analysis read another version of it. Run analyze.py again, or leave out --scores (--no-scores)"
            )


def default_scores(root: Path) -> Path | None:
    """The ``analysis/`` holding latent scores beside STORE (the layout train.py and analyze.py share), or inside it
    when STORE is paths.root itself; None (and a line saying where it looked) when there is none."""
    looked = [root.parent / "analysis", root / "analysis"]
    for folder in looked:
        present = [(folder / name).is_file() for name in (SCORES, SCORES_META)]
        if any(present) and not all(present):  # an analysis wrote both: one alone is what damage left
            raise DataError(f"{folder} holds only one of {SCORES} and {SCORES_META} (the other was deleted): run "
                            "analyze.py again, or export without the scores (--no-scores)")  # fmt: skip
        if all(present):
            return folder
    log.warning("no latent scores found (looked in %s): the SAEs are exported without them; --scores ANALYSIS adds "
                "an analysis's", " and ".join(str(f) for f in looked))  # fmt: skip
    return None


def stale_scores(weights: dict[str, str | None], by_name: dict[str, list[dict]], meta: dict) -> dict[str, str]:
    """The dictionaries whose scores were computed from other weights (another version, another store): name ->
    why, by the weights' sha256 the analysis recorded. An analysis that recorded none is matched by name only."""
    recorded = meta.get("weights_sha256")
    if recorded is None:
        return {}
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        raise DataError(f"{meta['analysis']}/{SCORES_META}: 'weights_sha256' is not a table of digests. Run "
                        "analyze.py again, or leave out the scores (--no-scores)")  # fmt: skip
    stale = {}
    for name, digest in weights.items():  # the weights' sha256 each dictionary's manifest records (verified)
        if name in by_name and recorded.get(name) != digest:
            stale[name] = "its weights are not the ones analysed (another version, or another store's)"
    return stale


EXPORT_FILES = frozenset({"cfg.json", "sae_weights.safetensors", "sparsity.safetensors", SCORES, SCORES_META})


def legacy_export(entries: list[Path]) -> bool:
    """An export folder written before exports carried their marker: the SAELens files and the scores, nothing else."""
    return all(p.is_file() and p.name in EXPORT_FILES for p in entries)


def check_outputs(out: Path, root: Path, chosen: dict[str, Path], scores: str | Path | None) -> None:
    """ConfigError, before anything is written, when OUT is a file, is, holds or sits inside the store exported (or
    its caches, runs or analysis), or when an ``OUT/<name>`` the export would replace holds what it did not write."""
    base = root if (root / "store").is_dir() else root.parent if root.name == "store" else None  # paths.root
    kept = {"the store exported": root / "store" if base == root else root}
    if base is not None:  # paths.root's layout: its caches and runs beside the store
        kept |= {"the caches": base / "cache", "the runs": base / "runs"}
    if scores is not None:
        kept["the analysis whose scores are exported"] = Path(scores)
    check_output(out, "export", f"OUT={out}", "give another OUT", kept, whole=False)
    for name in chosen:
        check_output(out / name, "export", f"the export folder {out / name}", "give another OUT", {},
                     legacy=legacy_export)  # fmt: skip


def export_sweep(root: str | Path, out: str | Path, scores: str | Path | None = None) -> list[Path]:
    """Write ``out/<name>/`` as a SAELens folder for every dictionary under ``root``, with its latent scores from the
    analysis folder ``scores`` where that analysed it; return the folders written."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: give the store (paths.root/store) or a folder of dictionaries")
    chosen = latest_dictionaries(root)
    # every file against its sha256, before a row is counted or an export written; the digests are kept
    weights = {name: verify(folder)["files"].get(SAE_WEIGHTS_FILE) for name, folder in chosen.items()}
    if not chosen:
        if any(p.name.startswith("sae-core-") for p in root.iterdir()):
            raise DataError(f"{root} holds stable cores, not dictionaries: each core version already holds its "
                            "SAELens folder (<core>/vN/saelens), which SAE.load_from_disk opens as it is")  # fmt: skip
        raise DataError(f"no dictionaries under {root}: train some first (`python train.py -m experiment=demo`)")
    by_name, meta = read_scores(Path(scores) if scores is not None else None)
    stale = stale_scores(weights, by_name, meta)
    by_name = {name: rows for name, rows in by_name.items() if name not in stale}
    _check_rows(chosen, by_name, meta)  # before any export is written
    for name, why in stale.items():
        log.warning("%s is exported without latent scores: the analysis at %s scored it, but %s; run analyze.py "
                    "again to score this version", name, meta["analysis"], why)  # fmt: skip
    check_outputs(out, root, chosen, scores)
    written, unscored = [], []
    for name, folder in chosen.items():
        d = load_dictionary(folder, verify_files=False)  # every file was checked above
        with atomic_folder(out / name, replace=True) as tmp:
            if saelens.is_saelens_folder(folder / saelens.SAELENS_DIR):
                shutil.copytree(folder / saelens.SAELENS_DIR, tmp, dirs_exist_ok=True)
            else:
                _older(d)
                gpt = _gpt_metadata(root, d.config.gpt_artifact)
                saelens.write(tmp, d.tensors, d.config, d.firing_counts, saelens.Standard(), gpt)
            rows = by_name.get(name)
            if rows is not None:
                _write_scores(tmp, rows, meta)
            elif meta and name not in stale:
                unscored.append(name)
            mark(tmp, "export")  # what the next export may replace: this folder, holding these files
        written.append(out / name)
        log.info("exported %s to %s%s", name, out / name, " with its latent scores" if name in by_name else "")
    if unscored:
        log.warning("%d exports have no latent scores: the analysis at %s did not compare them (%s)", len(unscored),
                    meta["analysis"], ", ".join(unscored[:4]) + (" ..." if len(unscored) > 4 else ""))  # fmt: skip
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sae_sweep.interop.export",
        description="Write every dictionary under STORE as a SAELens folder OUT/<name>/ (the latest version of each).",
        epilog="With sae-lens installed: from sae_lens import SAE; SAE.load_from_disk('OUT/sae-L2-J1024-s0')",
    )
    ap.add_argument("store", help="a store (e.g. sae_sweep_out/store) or any folder of dictionary folders")
    ap.add_argument("out", help="the folder to write one SAELens folder per dictionary into")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--scores", metavar="ANALYSIS", help="the analysis folder whose latent_scores.csv to add to "
                       "each export (default: STORE/../analysis when it holds one)")  # fmt: skip
    group.add_argument("--no-scores", action="store_true", help="export the SAEs alone, without latent scores")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        scores = None if args.no_scores else args.scores or default_scores(Path(args.store))
        if scores is not None:
            log.info("latent scores from %s", scores)
        written = export_sweep(args.store, args.out, scores)
    except SaeSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # OUT not writable, a disk full: nothing half-written is left (atomic_folder)
        print(f"error: writing the exports to {args.out} failed: {exc.strerror or exc} ({exc.filename or args.out}); "
              "the export folders already there are as they were", file=sys.stderr)  # fmt: skip
        return 1
    print(f"{len(written)} dictionaries exported to {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(
            "interrupted (Ctrl-C): each export folder is written whole before it is swapped in, so those already "
            "there are whole; run it again to go on",
            file=sys.stderr,
        )
        sys.exit(130)
