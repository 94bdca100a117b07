"""How long a bad command line takes to be refused, beside what loading the stages' libraries costs.

    python benchmarks/bench_refusal.py              # 5 interleaved rounds
    python benchmarks/bench_refusal.py --rounds 9

Each round runs, in fresh processes and in turn: ``train.py`` with a bad value (``sae.dict_size=abc``), ``analyze.py``
with one (``analysis.n_boot=many``), and for scale ``import torch`` and ``import lightning.pytorch``. It prints the
median wall time of each, and each refusal as a fraction of the Lightning import: a refusal that loads Lightning costs
at least 1.0 of it. The jobs are plain dataclasses (``train/jobs.py``, ``analysis/settings.py``) so that a refusal
needs torch at most, never Lightning nor the analysis's measures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "train.py sae.dict_size=abc": [str(REPO / "train.py"), "sae.dict_size=abc", "logger=none"],
    "analyze.py analysis.n_boot=many": [str(REPO / "analyze.py"), "analysis.n_boot=many", "logger=none"],
    "import torch": ["-c", "import torch"],
    "import lightning.pytorch": ["-c", "import lightning.pytorch"],
}


def seconds(args: list[str], refused: bool) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if (proc.returncode == 2) != refused:
        raise SystemExit(f"{args}: exit status {proc.returncode}\n{proc.stderr[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    args = ap.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.rounds):
        for name, argv in CASES.items():
            times[name].append(seconds(argv, refused=not name.startswith("import")))
    lightning = statistics.median(times["import lightning.pytorch"])
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:<34} {median:6.2f} s   {median / lightning:5.2f} x the Lightning import")


if __name__ == "__main__":
    main()
