"""Activations/s of SAE training at d_in=128: our step (sparse where the codes are, and forced dense), our Lightning
path (sparse where it pays, with several steps per Lightning batch or one; dense with one step per batch, the path
before issue 13), a plain-torch loop, SAELens' standard SAE (when installed), the bare five matmuls of a dense step,
the one dense product an exact step cannot avoid (encoder product + ReLU), and Adam alone, interleaved in one run.

    python benchmarks/bench_sae.py                      # batch 4096 x dict 1024, 8192; batch 256 x dict 1024, 8192
    python benchmarks/bench_sae.py --configs 4096x8192 --steps 10 --repeats 5

Every training path does a full step (forward, gradients, Adam, decoder renormalisation) on the same random
activations (ReLU of a Gaussian), from a trained-like state: the encoder bias is lowered until the codes have the
demo's L0 (``--l0``, 20 of J), held there by a tiny learning rate, so the sparse path is measured where training
spends most of its steps. Repeats alternate the paths so machine noise hits all of them; medians are printed with
ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from sae_sweep.train.batches import ActivationDataModule
from sae_sweep.train.sae import SAEConfig, SparseAutoencoder
from sae_sweep.train.sae_module import SAEModule
from sae_sweep.train.trainer import TrainerConfig, build_trainer

D_IN, L1, WARMUP = 128, 1e-3, 2
L0 = 20  # the demo's trained dictionaries fire 16-23 features per activation
# Adam's learning rate in every path: small, so the trained-like state stays trained-like over the timed steps (at
# 1e-3 on these random inputs L0 climbs from 20 to 170 in 130 steps); the work per step does not depend on it
LR = 1e-7


def trained_like(J: int, x: torch.Tensor, l0: int) -> SparseAutoencoder:
    """An SAE whose encoder bias is shifted so that about ``l0`` codes per row of ``x`` are positive."""
    sae = SparseAutoencoder(D_IN, SAEConfig(dict_size=J))
    with torch.no_grad():
        pre = torch.addmm(sae.encoder_bias, x, sae.encoder.t())  # (B, J)
        sae.encoder_bias -= pre.kthvalue(J - min(l0, J - 1), dim=1).values.median()
    return sae


def timed(step, xs: list[torch.Tensor]) -> float:
    for x in xs[:WARMUP]:
        step(x)
    t0 = time.perf_counter()
    for x in xs[WARMUP:]:
        step(x)
    return (len(xs) - WARMUP) * xs[0].shape[0] / (time.perf_counter() - t0)


def ours(sae: SparseAutoencoder, xs, path: str = "auto") -> float:
    """SAEModule.training_step without Lightning: our gradients, fused Adam, renormalisation, firing record."""
    sae = copy.deepcopy(sae)
    opt = torch.optim.Adam(sae.parameters(), lr=LR, fused=True)
    last_fired = torch.zeros(sae.dict_size, dtype=torch.long)

    def step(x):
        out = sae.fused_grads(x, L1, path)
        out["mse"].item()  # the NaN check reads the loss every step
        opt.step()
        sae.normalize_decoder_()
        last_fired.masked_fill_(out["code_sums"] > 0, 0)

    return timed(step, xs)


def plain(J: int, xs) -> float:
    """What one would write first: nn.Linear layers, autograd, Adam, renormalise after the step."""
    torch.manual_seed(0)
    enc, dec = nn.Linear(D_IN, J), nn.Linear(J, D_IN, bias=False)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=LR)

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


def adam(sae: SparseAutoencoder, xs) -> float:
    """The optimizer's floor: fused Adam over the SAE's 2 x J x d_in (+ J) parameters, gradients already there."""
    sae = copy.deepcopy(sae)
    for p in sae.parameters():
        p.grad = torch.randn_like(p)
    opt = torch.optim.Adam(sae.parameters(), lr=LR, fused=True)
    return timed(lambda x: opt.step(), xs)


def one_product(sae: SparseAutoencoder, xs) -> float:
    """The limit for an exact step: the dense encoder product (bias included) and its ReLU, nothing else."""
    codes = torch.empty(xs[0].shape[0], sae.dict_size)
    W, b = sae.encoder.detach(), sae.encoder_bias.detach()
    return timed(lambda x: torch.addmm(b, x, W.t(), out=codes).relu_(), xs)


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
    opt = torch.optim.Adam(sae.parameters(), lr=LR)

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
    """Times the steps from the first Lightning batch that starts at WARMUP or later (a batch may hold several)."""

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step >= WARMUP and not hasattr(self, "t0"):
            self.t0, self.step0 = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer, *args) -> None:
        self.t1, self.steps = time.perf_counter(), trainer.global_step - self.step0


def lightning(sae: SparseAutoencoder, xs, folder: Path, path: str = "auto", per_batch: int | None = None) -> float:
    """Our whole training path: stage=sae's Trainer, SAEModule and chunked float16 activation batches, with
    ``per_batch`` optimizer steps per Lightning batch (None: the default, ``sae.steps_per_batch``)."""
    B, J = xs[0].shape[0], sae.dict_size
    acts = folder / f"acts-{B}.npy"
    if not acts.exists():
        np.save(acts, torch.cat(xs).numpy().astype(np.float16))
    cfg = SAEConfig(
        dict_size=J, batch_size=B, ckpt_every=10**9, log_every=50, step=path, until="budget", epochs=1, lr=LR
    )
    cfg = replace(cfg, steps_per_batch=per_batch or cfg.steps_per_batch)
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
    module = SAEModule(D_IN, cfg)
    module.sae.load_state_dict(sae.state_dict())
    trainer.fit(module, datamodule=ActivationDataModule(acts, cfg))
    return timer.steps * B / (timer.t1 - timer.t0)


COLUMNS = {  # name: how to time it, given (trained-like SAE, xs, scratch folder)
    "ours": lambda sae, xs, tmp: ours(sae, xs),
    "ours dense": lambda sae, xs, tmp: ours(sae, xs, "dense"),
    "lightning": lambda sae, xs, tmp: lightning(sae, xs, tmp),
    "lightning 1/batch": lambda sae, xs, tmp: lightning(sae, xs, tmp, per_batch=1),
    "lightning dense": lambda sae, xs, tmp: lightning(sae, xs, tmp, "dense", per_batch=1),  # the path before issue 13
    "plain": lambda sae, xs, tmp: plain(sae.dict_size, xs),
    "matmuls": lambda sae, xs, tmp: matmuls(sae.dict_size, xs),
    "one product": lambda sae, xs, tmp: one_product(sae, xs),
    "adam": lambda sae, xs, tmp: adam(sae, xs),
    "saelens": lambda sae, xs, tmp: saelens(sae.dict_size, xs),
}


def ratios(med: dict[str, float]) -> str:
    parts = [
        f"sparse/dense step {med['ours'] / med['ours dense']:.2f}",
        f"ours/one product {med['ours'] / med['one product']:.2f}",
        f"lightning/lightning dense {med['lightning'] / med['lightning dense']:.2f}",
        f"stacked/one step per batch {med['lightning'] / med['lightning 1/batch']:.2f}",
        f"ours/plain {med['ours'] / med['plain']:.2f}",
        f"dense step takes {med['matmuls'] / med['ours dense']:.2f}x the five matmuls' time",
        f"Adam is {med['ours'] / med['adam']:.0%} of our step",
    ]
    if "saelens" in med:
        parts.append(f"ours/saelens {med['ours'] / med['saelens']:.2f}")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="4096x1024,4096x8192,256x1024,256x8192", help="BATCHxDICT,...")
    ap.add_argument("--steps", type=int, default=8, help="timed steps at batch 4096 (x16 at batch 256)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--l0", type=int, default=L0, help="active codes per row in the trained-like state")
    ap.add_argument("--only", default=",".join(COLUMNS), help="columns to time, comma-separated")
    args = ap.parse_args()
    only = args.only.split(",")
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, default CPU allocator, float32, L0 {args.l0}")
    rows = []
    for spec in args.configs.split(","):
        B, J = map(int, spec.split("x"))
        n = args.steps * max(1, 4096 // B) + WARMUP
        gen = torch.Generator().manual_seed(0)
        xs = [torch.relu(torch.randn(B, D_IN, generator=gen)) for _ in range(n)]
        sae = trained_like(J, xs[0], args.l0)
        results: dict[str, list[float]] = {k: [] for k in only}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                for name in only:
                    value = COLUMNS[name](sae, xs, Path(tmp))
                    if value is not None:
                        results[name].append(value)
        med = {k: statistics.median(v) for k, v in results.items() if v}
        rows.append((B, J, med))
        line = ", ".join(f"{k} {v:,.0f}" for k, v in med.items())
        print(f"batch {B} dict {J}: activations/s (median of {args.repeats}): {line}", flush=True)
        if "saelens" in only and "saelens" not in med:
            print("  (SAELens not installed: pip install sae-lens to include it)")
    if set(only) >= set(COLUMNS) - {"saelens"}:
        print("\nratios (higher is faster):")
        for B, J, med in rows:
            print(f"  batch {B:>4} dict {J:>4}: " + ratios(med))


if __name__ == "__main__":
    main()
