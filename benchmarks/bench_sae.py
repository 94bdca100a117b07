"""Activations/s of SAE training at d_in=128: our step and our Lightning path against a plain-torch loop,
SAELens' standard SAE (when installed) and the bare five matmuls a step needs, interleaved in one run.

    python benchmarks/bench_sae.py                      # batch 4096 x dict 1024, 8192; batch 256 x dict 1024, 8192
    python benchmarks/bench_sae.py --configs 4096x8192 --steps 10 --repeats 5

Every path does a full training step (forward, gradients, Adam, decoder renormalisation) on the same random
activations. Repeats alternate the paths so machine noise hits all of them; medians are printed with ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from sae_sweep.train.sae import SAEConfig, SparseAutoencoder
from sae_sweep.train.sae_module import ActivationDataModule, SAEModule
from sae_sweep.train.trainer import TrainerConfig, build_trainer

D_IN, L1, WARMUP = 128, 1e-3, 2


def timed(step, xs: list[torch.Tensor]) -> float:
    for x in xs[:WARMUP]:
        step(x)
    t0 = time.perf_counter()
    for x in xs[WARMUP:]:
        step(x)
    return (len(xs) - WARMUP) * xs[0].shape[0] / (time.perf_counter() - t0)


def ours(J: int, xs) -> float:
    sae = SparseAutoencoder(D_IN, SAEConfig(dict_size=J))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    last_fired = torch.zeros(J, dtype=torch.long)

    def step(x):
        out = sae.fused_grads(x, L1)
        out["mse"].item()  # the NaN check reads the loss every step
        opt.step()
        sae.normalize_decoder_()
        last_fired[out["code_sums"] > 0] = 0

    return timed(step, xs)


def plain(J: int, xs) -> float:
    """What one would write first: nn.Linear layers, autograd, Adam, renormalise after the step."""
    torch.manual_seed(0)
    enc, dec = nn.Linear(D_IN, J), nn.Linear(J, D_IN, bias=False)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)

    def step(x):
        codes = torch.relu(enc(x))
        loss = (dec(codes) - x).pow(2).mean() + L1 * codes.abs().sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            dec.weight /= dec.weight.norm(dim=0, keepdim=True)
        loss.item()

    return timed(step, xs)


def matmuls(J: int, xs) -> float:
    """The floor: the five (B x d x J) products of a step, into preallocated outputs."""
    B = xs[0].shape[0]
    W, D = torch.randn(J, D_IN), torch.randn(D_IN, J)
    codes, gcodes, recon = torch.empty(B, J), torch.empty(B, J), torch.empty(B, D_IN)
    gW, gD = torch.empty(J, D_IN), torch.empty(D_IN, J)

    def step(x):
        torch.mm(x, W.t(), out=codes)
        torch.mm(codes, D.t(), out=recon)
        torch.mm(recon.t(), codes, out=gD)
        torch.mm(recon, D, out=gcodes)
        torch.mm(gcodes.t(), x, out=gW)

    return timed(step, xs)


def saelens(J: int, xs) -> float | None:
    try:
        from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig  # noqa: PLC0415
    except ImportError:
        return None
    cfg = StandardTrainingSAEConfig(d_in=D_IN, d_sae=J, l1_coefficient=L1, dtype="float32", device="cpu")
    sae = StandardTrainingSAE(cfg)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)

    coefficients = sae.get_coefficients() if hasattr(sae, "get_coefficients") else {"l1": L1}
    coefficients = {k: (L1 if k == "l1" else v) for k, v in coefficients.items()}

    def step(x):
        out = sae.training_forward_pass(step_input=_saelens_input(x, coefficients))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        out.loss.item()

    return timed(step, xs)


def _saelens_input(x, coefficients):
    from sae_lens.saes.sae import TrainStepInput  # noqa: PLC0415

    fields = {"sae_in": x, "coefficients": coefficients, "dead_neuron_mask": None}
    optional = {"n_training_steps": 0, "is_logging_step": False}  # required by SAELens 6.x
    names = TrainStepInput.__dataclass_fields__
    return TrainStepInput(**fields, **{k: v for k, v in optional.items() if k in names})


class _Timer(pl.Callback):
    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == WARMUP:
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, *args) -> None:
        self.t1 = time.perf_counter()


def lightning(J: int, xs, folder: Path) -> float:
    """Our whole training path: stage=sae's Trainer, SAEModule and chunked float16 activation batches."""
    B = xs[0].shape[0]
    path = folder / f"acts-{B}.npy"
    if not path.exists():
        np.save(path, torch.cat(xs).numpy().astype(np.float16))
    cfg = SAEConfig(dict_size=J, batch_size=B, ckpt_every=10**9, log_every=50)
    timer = _Timer()
    trainer = build_trainer(
        TrainerConfig(),
        run_dir=folder / "run",
        max_steps=len(xs),
        loggers=[],
        ckpt_every=10**9,
        callbacks=(timer,),
        log_every=50,
    )
    trainer.fit(SAEModule(D_IN, cfg), datamodule=ActivationDataModule(path, cfg))
    return (len(xs) - WARMUP) * B / (timer.t1 - timer.t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="4096x1024,4096x8192,256x1024,256x8192", help="BATCHxDICT,...")
    ap.add_argument("--steps", type=int, default=8, help="timed steps at batch 4096 (x16 at batch 256)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, default CPU allocator, float32")
    rows = []
    for spec in args.configs.split(","):
        B, J = map(int, spec.split("x"))
        n = args.steps * max(1, 4096 // B) + WARMUP
        gen = torch.Generator().manual_seed(0)
        xs = [torch.relu(torch.randn(B, D_IN, generator=gen)) for _ in range(n)]
        paths = {"ours": ours, "lightning": None, "plain": plain, "matmuls": matmuls, "saelens": saelens}
        results: dict[str, list[float]] = {k: [] for k in paths}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                for name, fn in paths.items():
                    value = lightning(J, xs, Path(tmp)) if name == "lightning" else fn(J, xs)
                    if value is not None:
                        results[name].append(value)
        med = {k: statistics.median(v) for k, v in results.items() if v}
        rows.append((B, J, med))
        line = ", ".join(f"{k} {v:,.0f}" for k, v in med.items())
        print(f"batch {B} dict {J}: activations/s (median of {args.repeats}): {line}", flush=True)
        if "saelens" not in med:
            print("  (SAELens not installed: pip install sae-lens to include it)")
    print("\nratios (higher is faster):")
    for B, J, med in rows:
        parts = [
            f"ours/plain {med['ours'] / med['plain']:.2f}",
            f"lightning/plain {med['lightning'] / med['plain']:.2f}",
            f"ours takes {med['matmuls'] / med['ours']:.2f}x the matmuls' time",
        ]
        if "saelens" in med:
            parts.append(f"ours/saelens {med['ours'] / med['saelens']:.2f}")
        print(f"  batch {B:>4} dict {J:>4}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
