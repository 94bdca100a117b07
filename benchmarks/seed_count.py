"""What another seed changes: features called real per dictionary with two seeds against three.

    python train.py -m experiment=demo sae.seed=2            # a third seed beside the demo's 0 and 1
    python benchmarks/seed_count.py sae_sweep_out/store sae_sweep_out/cache

For seeds {0, 1} (found again in the other seed) and {0, 1, 2} at ``analysis.min_replications`` 1 (found again in at
least one of the two others) and 2 (in both), the verdicts are made as the report makes them (the same nulls, BH,
partial conjunction), at the constant floor ``analysis.match_cosine``: a kept calibration is not used, so that the
three rows compare like with like (give a cache folder without ``calibration/`` if one is kept). Prints a CSV:
seeds, min_replications, J, seed, real, features, dead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sae_sweep.analysis.collect import collect_local_variants
from sae_sweep.analysis.question import verdicts_of
from sae_sweep.analysis.settings import AnalysisConfig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path, help="the store holding seeds 0, 1 and 2 of the main run")
    ap.add_argument("cache", type=Path, help="paths.root/cache (its activations give the data-moment nulls)")
    args = ap.parse_args(argv)
    if (args.cache / "calibration").exists():
        print(f"error: {args.cache} keeps calibrations, which would set other floors for the two-seed set: give a "
              "folder holding links to its activations/ and tokens/ only", file=sys.stderr)  # fmt: skip
        return 2
    dicts = collect_local_variants(args.store, 2)[""]
    print("seeds,min_replications,J,seed,real,features,dead")
    for seeds, r in [((0, 1), 1), ((0, 1, 2), 1), ((0, 1, 2), 2)]:
        sub = {"": {k: d for k, d in dicts.items() if k[1] in seeds}}
        start = time.perf_counter()
        table = verdicts_of(sub, "", AnalysisConfig(min_replications=r), args.cache).table
        for (j, s), d in sorted(sub[""].items()):
            mine = table[table["name"] == d.name]
            real, dead = int((mine["verdict"] == "real").sum()), int((mine["verdict"] == "dead").sum())
            print(f"{len(seeds)},{r},{j},{s},{real},{len(mine)},{dead}")
        print(f"# seeds {seeds}, min_replications {r}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
