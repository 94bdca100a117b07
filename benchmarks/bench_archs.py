"""Milliseconds per training step of each SAE architecture (sae.arch) at d_in=128, batch 256, interleaved in one
run, medians of the repeats; with ``--against REV``, each architecture's step at that commit and in this checkout,
each timed in a fresh process importing its own tree's ``sae_sweep`` (the commit in a temporary git worktree).

    python benchmarks/bench_archs.py                          # J = 1024 and 8192
    python benchmarks/bench_archs.py --against 711c761        # the step before the selected-entries backward

A step is what SAEModule.one_step does for these architectures: the loss through autograd (with AuxK on half the
features marked dead, so its selection and decode run as in a one-pass sweep at large J), backward, fused Adam,
decoder renormalisation and BatchTopK's threshold update. One thread, random ReLU'd Gaussian inputs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sae_sweep.train.sae import SAEConfig, SparseAutoencoder

try:  # as SAEModule.setup does on CPU; a commit before it (--against) has no such module
    from sae_sweep.train.allocator import keep_freed_blocks
except ImportError:
    keep_freed_blocks = None

ROOT = Path(__file__).resolve().parent.parent
ARCHS = ("relu", "topk", "batchtopk", "jumprelu")
D_IN, BATCH, WARMUP = 128, 256, 3
L0 = 20  # the demo's: codes per row of a trained-like JumpReLU
JUMPRELU = {"l0_coeff": 3e-5, "bandwidth": 0.02, "threshold_init": 0.03}  # experiment=architectures' settings


def make(arch: str, J: int, x: torch.Tensor) -> SparseAutoencoder:
    """A fresh SAE; a JumpReLU one with its thresholds raised to fire ~L0 features per row of ``x`` (B, d_in), where
    training spends most of its steps (its codes start dense, and the step then takes the dense graph)."""
    sae = SparseAutoencoder(D_IN, SAEConfig(dict_size=J, arch=arch, **(JUMPRELU if arch == "jumprelu" else {})))
    if arch == "jumprelu":
        with torch.no_grad():
            kth = sae.pre_activations(x).kthvalue(J - L0, dim=1).values.median()  # the L0-th largest, typically
            sae.log_threshold.fill_(float(kth.clamp(min=1e-3).log()))
    return sae


def ms_per_step(sae: SparseAutoencoder, xs: torch.Tensor) -> float:
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3, fused=True)
    dead = torch.zeros(sae.dict_size, dtype=torch.bool)
    dead[: sae.dict_size // 2] = True

    def step(x):
        opt.zero_grad()
        out = sae.loss(x, 1e-3, dead if sae.arch in ("topk", "batchtopk") else None)
        out["loss"].backward()
        opt.step()
        sae.normalize_decoder_()
        sae.after_step_(out["codes"])

    for x in xs[:WARMUP]:
        step(x)
    t0 = time.perf_counter()
    for x in xs[WARMUP:]:
        step(x)
    return 1000 * (time.perf_counter() - t0) / (len(xs) - WARMUP)


def inputs(steps: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.relu(torch.randn(WARMUP + steps, BATCH, D_IN, generator=gen))


def in_tree(tree: Path, arch: str, J: int, steps: int) -> float:
    """ms per step of ``arch`` at ``J`` in a fresh process whose ``sae_sweep`` is ``tree``'s."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, __file__, "--one", arch, str(J), str(steps), str(tree)]
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("MS ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"timing in {tree} failed:\n{out.stderr[-2000:]}")
    return float(lines[-1].split()[1])


def against(rev: str, sizes: list[int], steps: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), rev], check=True)
        try:
            for J in sizes:
                for arch in ARCHS:
                    t = {"commit": [], "now": []}
                    for _ in range(repeats):
                        t["commit"].append(in_tree(old, arch, J, steps))
                        t["now"].append(in_tree(ROOT, arch, J, steps))
                    a, b = statistics.median(t["commit"]), statistics.median(t["now"])
                    print(f"J={J} {arch}: {rev} {a:.1f} ms, now {b:.1f} ms, speed-up {a / b:.2f}x", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 8192])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--against", metavar="REV", help="time each architecture at this commit too")
    ap.add_argument("--untuned", action="store_true", help="leave glibc's allocator as it is (train/allocator.py)")
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # ARCH J STEPS TREE: one timing (--against's child)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if keep_freed_blocks is not None and not args.untuned:
        keep_freed_blocks()
    if args.one:
        arch, J, steps, tree = args.one
        import sae_sweep  # noqa: PLC0415

        assert Path(sae_sweep.__file__).resolve().is_relative_to(Path(tree).resolve()), sae_sweep.__file__
        xs = inputs(int(steps))
        print("MS", ms_per_step(make(arch, int(J), xs[0]), xs))
        return
    if args.against:
        against(args.against, args.sizes, args.steps, args.repeats)
        return
    xs = inputs(args.steps)
    for J in args.sizes:
        times: dict[str, list[float]] = {a: [] for a in ARCHS}
        for _ in range(args.repeats):  # interleaved: machine noise hits every column alike
            for arch in ARCHS:
                times[arch].append(ms_per_step(make(arch, J, xs[0]), xs))
        print(f"J={J}: " + ", ".join(f"{k} {statistics.median(v):.1f} ms" for k, v in times.items()), flush=True)


if __name__ == "__main__":
    main()
