"""Is SAE training bitwise reproducible when the cores are busy? The experiment behind the resume-equality tests.

    python benchmarks/repro_under_load.py                 # 3 runs idle, 3 under load, for each setting
    python benchmarks/repro_under_load.py --runs 5 --load 4 --steps 400

Each run is a fresh process that trains one SAE with our step (the dense path for the first half of the steps, the
sparse path for the second, so that both paths' kernels run) and fused Adam for ``--steps`` steps on fixed data, then
prints a digest of its weights. Runs alternate between an idle machine and one where ``--load`` busy-looping
processes compete for the cores. For every setting (environment variables read by MKL and OpenMP at start-up) it
prints how many distinct digests each condition gave: one digest in all is bitwise reproducibility whatever the load.
Measured on 2 cores: one digest idle and under 2, 4 and 6 busy processes for every setting; "one thread" gives its
own digest because the SAE's orthogonal start depended on the thread count (it now runs on one thread).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time

TRAIN = r"""
import hashlib, sys, torch
from sae_sweep.train.sae import SAEConfig, SparseAutoencoder
steps, J = int(sys.argv[1]), int(sys.argv[2])
g = torch.Generator().manual_seed(0)
data = torch.relu(torch.randn(64, 256, 128, generator=g))
torch.manual_seed(0)
sae = SparseAutoencoder(128, SAEConfig(dict_size=J))
opt = torch.optim.Adam(sae.parameters(), lr=1e-3, fused=True)
paths = set()
for s in range(steps):
    out = sae.fused_grads(data[s % 64], 1e-3, "dense" if s < steps // 2 else "sparse")  # both paths' kernels
    paths.add(out["path"])
    opt.step()
    sae.normalize_decoder_()
digest = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in sae.parameters())).hexdigest()[:12]
print(digest, "+".join(sorted(paths)), torch.get_num_threads())
"""

SETTINGS = {  # name: environment added to the run's
    "default": {},
    "MKL_DYNAMIC=FALSE": {"MKL_DYNAMIC": "FALSE"},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "OMP_DYNAMIC=FALSE": {"OMP_DYNAMIC": "FALSE"},
    "one thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _run(env: dict, steps: int, J: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", TRAIN, str(steps), str(J)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per condition and setting")
    ap.add_argument("--load", type=int, default=2, help="busy processes in the loaded condition")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--dict-size", type=int, default=1024)
    ap.add_argument("--only", default=",".join(SETTINGS), help="settings to try, comma-separated")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs; {args.runs} runs idle and {args.runs} under {args.load} busy processes each")
    for name in args.only.split(","):
        digests: dict[str, list[str]] = {"idle": [], "loaded": []}
        for _ in range(args.runs):
            digests["idle"].append(_run(SETTINGS[name], args.steps, args.dict_size))
            stop = mp.Event()
            spinners = [mp.Process(target=_spin, args=(stop,)) for _ in range(args.load)]
            for p in spinners:
                p.start()
            time.sleep(0.3)
            try:
                digests["loaded"].append(_run(SETTINGS[name], args.steps, args.dict_size))
            finally:
                stop.set()
                for p in spinners:
                    p.join()
        every = set(digests["idle"]) | set(digests["loaded"])
        print(
            f"{name:22s} distinct digests: idle {len(set(digests['idle']))}, loaded {len(set(digests['loaded']))}, "
            f"all {len(every)}  {'REPRODUCIBLE' if len(every) == 1 else 'DIFFERS'}  {digests}",
            flush=True,
        )


if __name__ == "__main__":
    main()
