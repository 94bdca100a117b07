"""The per-feature verdicts (analysis/measures/verdicts.py): calibration on null dictionaries, and time and memory.

    python benchmarks/bench_verdicts.py calibration --cache sae_sweep_out/cache/activations/<key> [--sets 50]
    python benchmarks/bench_verdicts.py calibration --cache ... --match-cosine 0.5    # the test alone, no cosine floor
    python benchmarks/bench_verdicts.py calibration --cache ... --null rows          # the activation-row null
    python benchmarks/bench_verdicts.py scale [--dicts 8 --size 65536 --d-in 768]

``calibration``: null dictionary pairs (two seeds of one size, nothing shared) from three families: isotropic
Gaussian, Gaussian with the activations' second moment, and random activation rows (drawn from the cache, the null's
own queries drawn apart from them). For each family and size, the share of null dictionaries with any ``real`` call,
which Benjamini-Hochberg bounds by the FDR under this global null (with its Wilson interval), and the share of null
features called real. ``scale``: the verdicts of ``--dicts`` random dictionaries (one seed each) of ``--size``
atoms in ``--d-in`` dimensions, wall time and peak resident memory, with the isotropic and reference nulls (no
activation cache): time grows with (dicts x size)^2 x d_in (every ordered pair's MCS) plus dicts x null_rows x size
x d_in per null; memory with dicts^2 x size (each pair's matches) and chunk_size x size (one MCS block).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_sweep.activations import open_activations  # noqa: E402
from sae_sweep.analysis.measures.inference import wilson_interval  # noqa: E402
from sae_sweep.analysis.measures.nulls import activation_dictionary, random_dictionary  # noqa: E402
from sae_sweep.analysis.measures.verdicts import Atoms, verdicts  # noqa: E402
from sae_sweep.analysis.settings import AnalysisConfig  # noqa: E402


def _families(acts: np.ndarray, d: int):
    sample = np.asarray(acts[: min(len(acts), 200_000)], dtype=np.float64)
    moment = sample.T @ sample / len(sample)  # (d, d) E[x x^T]
    return {
        "isotropic": lambda n, s: random_dictionary(n, d, s),
        "second moment": lambda n, s: np.random.default_rng(s).multivariate_normal(np.zeros(d), moment, n),
        "activation rows": lambda n, s: activation_dictionary(acts, n, s),
    }


def calibration(args) -> None:
    acts = open_activations(Path(args.cache)).train
    half = np.random.default_rng(0).permutation(len(acts)) < len(acts) // 2  # a random half of the rows (not the
    # even ones: a repeated stretch of text repeats its rows at the same offset, so rows of one parity share repeats)
    queries = acts[np.flatnonzero(~half)]  # the rows null's queries; the null dictionaries are drawn from the rest
    cfg = AnalysisConfig(fdr=args.fdr, match_cosine=args.match_cosine, verdict_null=args.null)
    families = _families(acts[np.flatnonzero(half)], acts.shape[1])
    print(f"null dictionaries: two seeds of J atoms, {args.sets} pairs each; verdict_null={cfg.verdict_null}, "
          f"match_cosine={cfg.match_cosine}, FDR {cfg.fdr}")  # fmt: skip
    for family, make in families.items():
        for J in args.sizes:
            any_real = called = 0
            t0 = time.perf_counter()
            for i in range(args.sets):  # one draw of 2J rows split in two: no row in both (two draws may share one)
                a, b = np.split(np.asarray(make(2 * J, 1000 * J + i), dtype=np.float32), 2)
                t = verdicts({(J, 0): Atoms("a", a, None), (J, 1): Atoms("b", b, None)}, cfg, queries).table
                real = t[t["name"] == "a"]["verdict"] == "real"
                any_real += int(real.any())
                called += int(real.sum())
            lo, hi = wilson_interval(any_real, args.sets, 0.95)
            print(f"{family:>16}  J={J:<5}  dictionaries with a real call: {any_real}/{args.sets} = "
                  f"{any_real / args.sets:.3f} [{lo:.3f}, {hi:.3f}]; features called real: {called}/{args.sets * J} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip


def scale(args) -> None:
    cfg = AnalysisConfig(verdict_null="auto")
    atoms = {}
    for i in range(args.dicts):  # one size, a seed each: each dictionary's references are the other seeds
        atoms[(args.size, i)] = Atoms(f"d{i}", random_dictionary(args.size, args.d_in, i), None)
    t0 = time.perf_counter()
    v = verdicts(atoms, cfg)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"{args.dicts} dictionaries (seeds) of {args.size} atoms at d_in={args.d_in}: {wall:.1f} s, peak RSS "
          f"{peak:.2f} GiB, {len(v.table)} rows, {len(v.matches)} ordered pairs")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("calibration", help="false real calls on null dictionaries")
    c.add_argument("--cache", required=True, help="an activation cache folder (train.npy, val.npy, meta.json)")
    c.add_argument("--sets", type=int, default=50, help="null dictionary pairs per family and size")
    c.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    c.add_argument("--fdr", type=float, default=0.05)
    c.add_argument(
        "--match-cosine", type=float, default=AnalysisConfig.match_cosine, help="0.5: the test alone decides"
    )
    c.add_argument("--null", default="auto", help="analysis.verdict_null")
    s = sub.add_parser("scale", help="time and memory on random dictionaries")
    s.add_argument("--dicts", type=int, default=8, help="dictionaries of --size atoms, one seed each")
    s.add_argument("--size", type=int, default=8192)
    s.add_argument("--d-in", type=int, default=768)
    args = ap.parse_args()
    calibration(args) if args.what == "calibration" else scale(args)


if __name__ == "__main__":
    main()
