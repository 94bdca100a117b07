"""Check the per-feature verdicts of a synthetic run against its known truth, outside the project's code.

Reads only files: the report's features.csv (each feature's verdict) and verdict_recall.csv (the calibration's
estimated recall per dictionary), and the store's sae.safetensors and true features (features.npy). For every
dictionary: the precision of ``real`` (its real calls within cosine 0.9 of a true feature) and its recall of the
replicable truth (true features that every seed's dictionary of its size holds within 0.9; found: its nearest atom
here is called real), and whether that recall lies inside the estimate's interval.

    python benchmarks/check_verdicts_truth.py STORE REPORT_DIR [--cosine 0.9]

Prints one row per dictionary and a summary line; exits 1 where a dictionary has precision below 0.95 or recall
below --recall (default 0.8), so a sweep of settings can be checked in one loop.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def latest(store: Path, name: str) -> Path:
    return store / name / (store / name / "latest").read_text().strip()


def unit_rows(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("report", type=Path)
    ap.add_argument("--cosine", type=float, default=0.9)
    ap.add_argument("--recall", type=float, default=0.8)
    args = ap.parse_args(argv)
    verdicts = defaultdict(dict)
    with open(args.report / "features.csv", newline="") as f:
        for r in csv.DictReader(f):
            verdicts[r["name"]][int(r["feature"])] = r["verdict"]
    with open(args.report / "verdict_recall.csv", newline="") as f:
        estimates = {r["name"]: r for r in csv.DictReader(f)}
    atoms, truth, size = {}, None, {}
    for name in verdicts:
        folder = latest(args.store, name)
        config = json.loads((folder / "config.json").read_text())
        atoms[name] = unit_rows(load_file(str(folder / "sae.safetensors"))["decoder"].T.astype(np.float64))
        size[name] = config["dict_size"]
        ref = config["synthetic"]["features"].split(":")[0]
        truth = unit_rows(np.load(latest(args.store, ref) / "features.npy").astype(np.float64))
    held = {n: (truth @ a.T).max(axis=1) > args.cosine for n, a in atoms.items()}  # (n_true,) per dictionary
    failed, inside, rows = 0, 0, 0
    print("name, size, real, precision, replicable, recall, estimate [lo, hi], inside")
    for name in sorted(atoms, key=lambda n: (size[n], n)):
        real = np.array([verdicts[name][i] == "real" for i in range(len(atoms[name]))])
        right = (atoms[name] @ truth.T).max(axis=1) > args.cosine
        replicable = np.logical_and.reduce([held[n] for n in atoms if size[n] == size[name]])
        nearest = (truth @ atoms[name].T).argmax(axis=1)
        precision = (real & right).sum() / real.sum() if real.any() else float("nan")
        recall = real[nearest[replicable]].mean() if replicable.any() else float("nan")
        est = estimates.get(name, {})
        lo, hi = (float(est[k]) if est.get(k) else float("nan") for k in ("estimated_lo", "estimated_hi"))
        ok = lo <= recall <= hi
        inside, rows = inside + ok, rows + (replicable.any() and np.isfinite(lo))
        bad = precision < 0.95 or recall < args.recall
        failed += bool(bad)
        flag = "  <- below target" if bad else ""
        print(f"{name}, {size[name]}, {int(real.sum())}, {precision:.3f}, {int(replicable.sum())}, {recall:.3f}, "
              f"{est.get('estimated_recall') or 'n/a'} [{lo:.3f}, {hi:.3f}], {ok}{flag}")  # fmt: skip
    print(f"{failed} of {len(atoms)} dictionaries below precision 0.95 or recall {args.recall}; measured recall inside "
          f"the estimate's interval for {inside} of {rows} with an estimate")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
