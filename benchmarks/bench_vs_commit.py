"""This checkout's SAE training path against the same path at an earlier commit: activations/s through Lightning.

    python benchmarks/bench_vs_commit.py 150a642                  # issue 13's baseline: the path when it was filed
    python benchmarks/bench_vs_commit.py 150a642 --configs 256x8192 --steps 32 --repeats 7
    python benchmarks/bench_vs_commit.py cf4458c --what eval --configs 4096x8192   # held-out evaluations/s

A speed-up claimed against "the path as it was" is measured against that code, not against today's code with an
option set: the commit is checked out into a temporary git worktree, and each repeat times the commit's
``benchmarks/bench_sae.py::lightning`` and this checkout's in two fresh processes, one after the other (each
process imports its own tree's ``sae_sweep``), so machine noise hits both. Both train on the same random
activations; this checkout starts from ``bench_sae.trained_like`` (the demo's L0 of 20), where training spends
most of its steps. The commit's step must not depend on the codes' sparsity (true of the dense step it had before
issue 13); medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh process inside one tree: print one number, the Lightning path's activations/s.
SNIPPET = """
import inspect, sys, tempfile, torch
from pathlib import Path
sys.path.insert(0, "benchmarks")
import bench_sae as b
assert Path(b.__file__).resolve().is_relative_to(Path.cwd().resolve()), b.__file__
import sae_sweep
assert Path(sae_sweep.__file__).resolve().is_relative_to(Path.cwd().resolve()), sae_sweep.__file__
B, J, steps = {B}, {J}, {steps}
gen = torch.Generator().manual_seed(0)
xs = [torch.relu(torch.randn(B, b.D_IN, generator=gen)) for _ in range(steps + b.WARMUP)]
old = "J" in inspect.signature(b.lightning).parameters  # before issue 13 it took the size, not an SAE
with tempfile.TemporaryDirectory() as tmp:
    rate = b.lightning(J, xs, Path(tmp)) if old else b.lightning(b.trained_like(J, xs[0], b.L0), xs, Path(tmp))
print("RATE", rate)
"""

# The same, for the held-out evaluation a converging run makes every sae.eval_every steps: B rows, one thread.
EVAL_SNIPPET = """
import sys, time, torch
from pathlib import Path
sys.path.insert(0, "benchmarks")
import bench_sae as b
from sae_sweep.train import convergence
assert Path(convergence.__file__).resolve().is_relative_to(Path.cwd().resolve()), convergence.__file__
torch.set_num_threads(1)
B, J, steps = {B}, {J}, {steps}
x = torch.relu(torch.randn(B, b.D_IN, generator=torch.Generator().manual_seed(0)))
sae = b.trained_like(J, x, b.L0)
before = sae.decoder.detach().clone()
convergence.evaluate(sae, x, b.L1, before, 0)
t0 = time.perf_counter()
for _ in range(max(1, steps // 64)):
    convergence.evaluate(sae, x, b.L1, before, 0)
print("RATE", max(1, steps // 64) / (time.perf_counter() - t0))
"""


def rate(tree: Path, B: int, J: int, steps: int, what: str = "train") -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = (SNIPPET if what == "train" else EVAL_SNIPPET).format(B=B, J=J, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RATE ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"timing in {tree} failed:\n{out.stderr[-2000:]}")
    return float(lines[-1].split()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("commit", help="the earlier commit (any git revision)")
    ap.add_argument("--configs", default="256x1024,256x8192", help="BATCHxDICT,...")
    ap.add_argument("--steps", type=int, default=512, help="timed optimizer steps per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--what", choices=("train", "eval"), default="train", help="steps, or held-out evaluations")
    args = ap.parse_args()
    unit = "activations/s through Lightning" if args.what == "train" else "held-out evaluations/s (one thread)"
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), args.commit], check=True)
        try:
            for spec in args.configs.split(","):
                B, J = map(int, spec.split("x"))
                runs = {"commit": [], "now": []}
                for _ in range(args.repeats):
                    runs["commit"].append(rate(old, B, J, args.steps, args.what))
                    runs["now"].append(rate(ROOT, B, J, args.steps, args.what))
                med = {k: statistics.median(v) for k, v in runs.items()}
                print(
                    f"batch {B} dict {J}: {unit} (median of {args.repeats}): "
                    f"{args.commit} {med['commit']:,.2f}, this checkout {med['now']:,.2f}, "
                    f"ratio {med['now'] / med['commit']:.2f}",
                    flush=True,
                )
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)


if __name__ == "__main__":
    main()
