"""Activations/s of a sweep on one machine: one job at a time with every core's threads, against ``--jobs`` jobs
side by side with a share of the threads each (what ``hydra/launcher=parallel`` does), through the real Lightning path.

    python benchmarks/bench_parallel.py                          # dict 1024 and 8192, batch 256, 2 jobs
    python benchmarks/bench_parallel.py --dict-sizes 256 --steps 2000 --repeats 5

Each job is a fresh process that trains an ``SAEModule`` with ``build_trainer`` (no checkpoints, no logger, no bar)
for ``--steps`` steps at batch 256 on random activations (ReLU of a Gaussian), from a trained-like state (encoder
bias lowered until L0 is about 20, held there by a tiny learning rate, as in bench_sae.py), so the sparse step is
measured where training spends most of its steps. A job reports the wall-clock start and end of its fit; the side-by-
side rate is all jobs' activations over the span from the first start to the last end, so it counts only time when
the jobs overlap or wait for each other, not process start-up. Repeats alternate the two layouts; medians and their
ratio are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

D_IN, BATCH, L0, LR = 128, 256, 20, 1e-7


def worker(threads: int, dict_size: int, steps: int, seed: int) -> None:
    """Train one SAE for ``steps`` steps with ``threads`` torch threads; print {start, end, activations} as JSON."""
    import numpy as np  # noqa: PLC0415 - the worker's imports stay out of the parent, which only times
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sae_sweep.train.batches import ActivationDataModule  # noqa: PLC0415
    from sae_sweep.train.sae import SAEConfig  # noqa: PLC0415
    from sae_sweep.train.sae_module import SAEModule  # noqa: PLC0415
    from sae_sweep.train.trainer import TrainerConfig, build_trainer  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp())
    rows = np.maximum(np.random.default_rng(seed).standard_normal((steps * BATCH + BATCH, D_IN)), 0)
    np.save(tmp / "acts.npy", rows.astype(np.float16))
    cfg = SAEConfig(dict_size=dict_size, epochs=1, lr=LR, seed=seed)
    module = SAEModule(D_IN, cfg)
    with torch.no_grad():  # trained-like: about L0 positive codes per row
        x = torch.from_numpy(rows[:2048].astype(np.float32))
        pre = torch.addmm(module.sae.encoder_bias, x, module.sae.encoder.t())  # (2048, J)
        module.sae.encoder_bias -= pre.kthvalue(dict_size - L0, dim=1).values.median()
    trainer = build_trainer(
        TrainerConfig(progress_bar=False), run_dir=tmp, max_steps=steps, loggers=[], ckpt_every=10**9
    )
    start = time.time()
    trainer.fit(module, datamodule=ActivationDataModule(tmp / "acts.npy", cfg))
    print(json.dumps({"start": start, "end": time.time(), "activations": steps * BATCH}))


def layout(jobs: int, threads: int, dict_size: int, steps: int) -> float:
    """Activations/s of ``jobs`` worker processes started together, ``threads`` torch threads each."""
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--dict-sizes", str(dict_size)]
    procs = [
        subprocess.Popen([*cmd, "--steps", str(steps), "--seed", str(i)], stdout=subprocess.PIPE, text=True)
        for i in range(jobs)
    ]
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return sum(r["activations"] for r in reports) / span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dict-sizes", default="1024,8192")
    parser.add_argument("--steps", type=int, default=1500, help="steps per job (J=8192 runs a quarter of them)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.threads, int(args.dict_sizes), args.steps, args.seed)
    cores = os.cpu_count() or 1
    share = max(1, cores // args.jobs)
    print(f"{cores} CPUs; one job x {cores} threads against {args.jobs} jobs x {share} thread(s); batch {BATCH}")
    for J in (int(s) for s in args.dict_sizes.split(",")):
        steps = args.steps if J < 4096 else max(args.steps // 4, 100)
        alone, side = [], []
        for _ in range(args.repeats):  # interleaved, so machine noise hits both layouts
            alone.append(layout(1, cores, J, steps))
            side.append(layout(args.jobs, share, J, steps))
        a, s = statistics.median(alone), statistics.median(side)
        print(f"J={J:5d}: one job {a:9,.0f} act/s   {args.jobs} side by side {s:9,.0f} act/s   ratio {s / a:.2f}x")


if __name__ == "__main__":
    main()
