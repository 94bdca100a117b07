"""Max cosine similarity at K=128: our kernel against naive numpy and the bare float32 matmul, plus EMD.

    python benchmarks/bench_mcs.py                                  # 8192x16384 and 32768x65536, 3 repeats
    python benchmarks/bench_mcs.py --shapes 4096x8192 --repeats 5
    python benchmarks/bench_mcs.py --shapes 32768x65536 --sweep-chunks 512 1024 2048 4096 --paths ours

Paths, all on the same random N(0, 1) float32 dictionaries (rows are features):

* ours       ``sae_sweep.analysis.measures.mcs.max_cosine_similarity`` (values and indices).
* naive      numpy: normalise, the full ``a @ b.T`` product, ``max`` and ``argmax`` over it.
* mm_rows    the bare chunked ``torch.mm``: ``chunk_size x n_b`` products into one reused buffer, nothing else.
* mm_tiled   the bare ``torch.mm`` of exactly the tiles ours runs (``chunk_size x mcs._COL_BLOCK``), no max.

Every measurement runs in a fresh spawned process, so peak memory is that path's alone: ru_maxrss after the work
minus ru_maxrss right after the inputs were created. Repeats interleave the paths so machine noise hits all of them;
medians are printed with ratios. The EMD part times ``stats.emd`` (sorted-sample fast path) against
``scipy.stats.wasserstein_distance`` on two equal-size samples.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import scipy.stats
import torch

from sae_sweep.analysis.measures import mcs
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.analysis.measures.nulls import random_dictionary
from sae_sweep.analysis.measures.stats import emd

PATHS = ("ours", "naive", "mm_rows", "mm_tiled")


# ------------------------------------------------------------------------------------------------------------- paths
def run_ours(a: np.ndarray, b: np.ndarray, chunk: int) -> float:
    values, _ = max_cosine_similarity(a, b, chunk_size=chunk, device="cpu")
    return float(values.mean())


def run_naive(a: np.ndarray, b: np.ndarray, chunk: int) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    sim = a @ b.T  # (n_a, n_b) float32: 8.6 GB at 32768 x 65536
    values, _ = sim.max(axis=1), sim.argmax(axis=1)
    return float(values.mean())


def run_mm(a: np.ndarray, b: np.ndarray, chunk: int, block: int | None) -> float:
    """Bare products only: rows of a in chunks, columns in blocks of ``block`` (None: all of b at once)."""
    a_t, bt = torch.from_numpy(a), torch.from_numpy(b).t()
    n_a, n_b = a_t.shape[0], bt.shape[1]
    block = n_b if block is None else min(block, n_b)
    buf = torch.empty(min(chunk, n_a) * block)
    for i in range(0, n_a, chunk):
        m = min(chunk, n_a - i)
        for j in range(0, n_b, block):
            w = min(block, n_b - j)
            torch.mm(a_t[i : i + m], bt[:, j : j + w], out=buf[: m * w].view(m, w))
    return float("nan")


def child(path: str, n_a: int, n_b: int, K: int, chunk: int) -> tuple[float, float, float]:
    """In a fresh process: build the inputs, run one path once; (seconds, peak MB above the inputs, mean MCS)."""
    a, b = random_dictionary(n_a, K, seed=1), random_dictionary(n_b, K, seed=2)
    small_a, small_b = a[:64].copy(), b[:256].copy()
    warm = {  # load BLAS and start thread pools on tiny inputs, so the timed call measures the work alone
        "ours": lambda: run_ours(small_a, small_b, chunk),
        "naive": lambda: run_naive(small_a, small_b, chunk),
        "mm_rows": lambda: run_mm(small_a, small_b, chunk, None),
        "mm_tiled": lambda: run_mm(small_a, small_b, chunk, mcs._COL_BLOCK),
    }[path]
    work = {
        "ours": lambda: run_ours(a, b, chunk),
        "naive": lambda: run_naive(a, b, chunk),
        "mm_rows": lambda: run_mm(a, b, chunk, None),
        "mm_tiled": lambda: run_mm(a, b, chunk, mcs._COL_BLOCK),
    }[path]
    warm()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    t0 = time.perf_counter()
    mean = work()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return seconds, (peak - base) / 1024, mean


def measure(ctx, path: str, n_a: int, n_b: int, K: int, chunk: int) -> tuple[float, float, float] | None:
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        try:
            return pool.submit(child, path, n_a, n_b, K, chunk).result()
        except (BrokenProcessPool, MemoryError) as err:  # killed for memory, or numpy refused the allocation
            print(f"  {path} {n_a}x{n_b} chunk {chunk}: failed ({type(err).__name__})", flush=True)
            return None


# -------------------------------------------------------------------------------------------------------------- report
def parse_shape(text: str) -> tuple[int, int]:
    n_a, n_b = text.lower().split("x")
    return int(n_a), int(n_b)


def report_mcs(shape, K: int, results: dict, chunk: int, sweep: list[int]) -> None:
    n_a, n_b = shape
    gflop = 2 * n_a * n_b * K / 1e9
    print(f"\nMCS {n_a} x {n_b}, K={K} ({gflop:.0f} GFLOP per product, chunk_size={chunk}, col block {mcs._COL_BLOCK})")
    print(f"  {'path':<16}{'median s':>10}{'min s':>9}{'GFLOP/s':>9}{'peak MB':>10}{'mean MCS':>10}")
    med: dict[str, float] = {}
    mem: dict[str, float] = {}
    for key, runs in results.items():
        if not runs:
            print(f"  {key:<16}{'failed':>10}")
            continue
        secs = [r[0] for r in runs]
        med[key], mem[key] = statistics.median(secs), statistics.median(r[1] for r in runs)
        print(
            f"  {key:<16}{med[key]:>10.3f}{min(secs):>9.3f}{gflop / med[key]:>9.0f}{mem[key]:>10.0f}{runs[0][2]:>10.4f}"
        )
    ours = f"ours@{chunk}"
    if ours in med and "naive" in med:
        print(
            f"  ours vs naive numpy: {med['naive'] / med[ours]:.1f}x faster, "
            f"{mem[ours] / max(mem['naive'], 1e-9):.3f} of its peak memory "
            f"({mem['naive'] / max(mem[ours], 1):.0f}x less)"
        )
    for bare in ("mm_rows", "mm_tiled"):
        if ours in med and bare in med:
            print(f"  ours vs bare {bare}: {med[bare] / med[ours]:.2f} of its throughput")
    for c in sweep:
        if f"ours@{c}" in med and "mm_rows" in med:
            print(f"  ours@{c}: {med['mm_rows'] / med[f'ours@{c}']:.2f} of mm_rows throughput")


def bench_emd(size: int, repeats: int) -> None:
    rng = np.random.default_rng(3)
    u, v = rng.standard_normal(size), rng.standard_normal(size) * 1.1 + 0.05
    fast_t, scipy_t = [], []
    for _ in range(repeats):  # interleaved
        t0 = time.perf_counter()
        fast = emd(u, v)
        fast_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = scipy.stats.wasserstein_distance(u, v)
        scipy_t.append(time.perf_counter() - t0)
    f, s = statistics.median(fast_t), statistics.median(scipy_t)
    print(f"\nEMD of two samples of {size:.0e} values ({repeats} repeats)")
    print(f"  stats.emd (sorted fast path)   {f * 1e3:8.1f} ms   W1 = {fast:.15f}")
    print(f"  scipy.stats.wasserstein_distance    {s * 1e3:8.1f} ms   W1 = {ref:.15f}")
    print(f"  speed-up {s / f:.1f}x, relative difference {abs(fast - ref) / ref:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["8192x16384", "32768x65536"], help="n_a x n_b pairs")
    parser.add_argument("--K", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: max_cosine_similarity's default")
    parser.add_argument("--sweep-chunks", nargs="*", type=int, default=[], help="also time ours at these chunk sizes")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--emd-size", type=int, default=1_000_000)
    args = parser.parse_args()

    chunk = args.chunk_size or max_cosine_similarity.__defaults__[0]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads ({os.cpu_count()} CPUs), "
        f"numpy {np.__version__}, {platform.processor() or platform.machine()}"
    )
    print(f"allocator: default (glibc malloc, no LD_PRELOAD); LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}")
    ctx = multiprocessing.get_context("spawn")
    shapes = [parse_shape(s) for s in args.shapes]
    jobs = [(p, chunk) for p in args.paths] + [("ours", c) for c in args.sweep_chunks if c != chunk]
    results = {s: {(f"ours@{c}" if p == "ours" else p): [] for p, c in jobs} for s in shapes}
    for r in range(args.repeats):
        for shape in shapes:
            for path, c in jobs:
                out = measure(ctx, path, *shape, args.K, c)
                key = f"ours@{c}" if path == "ours" else path
                if out is not None:
                    results[shape][key].append(out)
                print(
                    f"  repeat {r + 1}: {key:<12} {shape[0]}x{shape[1]} "
                    + (f"{out[0]:.3f} s, {out[1]:.0f} MB" if out else "failed"),
                    flush=True,
                )
    for shape in shapes:
        report_mcs(shape, args.K, results[shape], chunk, [c for c in args.sweep_chunks if c != chunk])
    bench_emd(args.emd_size, max(args.repeats, 5))


if __name__ == "__main__":
    main()
