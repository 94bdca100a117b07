"""Tokens/s of GPT pretraining: our Lightning path against a plain-torch loop, same model, same batches.

    python benchmarks/bench_pretrain.py            # default model shape, 3 interleaved repeats
    python benchmarks/bench_pretrain.py --steps 40 --repeats 5

Both paths draw identical batches from the same RandomBlocks dataset, use the same AdamW groups, schedule and
gradient clipping, and are timed over the steps after a warm-up. Repeats alternate the two paths so machine noise
hits both; the medians and their ratio are printed. Target: ratio >= 0.9.
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

from sae_sweep.tracking import LoggerConfig
from sae_sweep.train.gpt import GPT, GPTConfig
from sae_sweep.train.gpt_module import GPTModule, PretrainConfig, RandomBlocks, TokenDataModule
from sae_sweep.train.loggers import build_loggers
from sae_sweep.train.trainer import TrainerConfig, build_trainer


class StepTimer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.t1 = warmup, None, None

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, *args) -> None:
        self.t1 = time.perf_counter()


def plain_loop(model_cfg: GPTConfig, cfg: PretrainConfig, train_path: Path, warmup: int) -> float:
    torch.manual_seed(cfg.seed)
    model = GPT(model_cfg)
    opt = torch.optim.AdamW(model.optimizer_groups(cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cfg.lr_at(s) / cfg.lr)
    blocks = iter(RandomBlocks(train_path, model_cfg.block_size, cfg.batch_size, cfg.seed))
    for step in range(cfg.max_steps):
        if step == warmup:
            t0 = time.perf_counter()
        x, y = next(blocks)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        loss.item()  # Lightning reads the loss each step for its logs; so does any real loop
    return (cfg.max_steps - warmup) * cfg.batch_size * model_cfg.block_size / (time.perf_counter() - t0)


def lightning_path(model_cfg: GPTConfig, cfg: PretrainConfig, folder: Path, warmup: int, run: int) -> float:
    torch.manual_seed(cfg.seed)
    run_dir = folder / f"run{run}"
    timer = StepTimer(warmup)
    trainer = build_trainer(
        TrainerConfig(),
        run_dir=run_dir,
        max_steps=cfg.max_steps,
        ckpt_every=10**9,
        loggers=build_loggers(LoggerConfig(kind="none"), run_dir, "bench"),
        callbacks=(timer,),
        grad_clip=cfg.grad_clip,
    )
    dm = TokenDataModule(folder / "train.bin", folder / "val.bin", model_cfg.block_size, cfg)
    trainer.fit(GPTModule(model_cfg, cfg), datamodule=dm)
    return (cfg.max_steps - warmup) * cfg.batch_size * model_cfg.block_size / (timer.t1 - timer.t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run (after 5 warm-up steps)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args()
    warmup = 5
    model_cfg = GPTConfig(vocab_size=args.vocab)
    cfg = PretrainConfig(max_steps=args.steps + warmup, warmup_steps=2)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        for split in ("train", "val"):
            rng.integers(0, args.vocab, 1_000_000, dtype=np.uint16).tofile(folder / f"{split}.bin")
        plain, light = [], []
        for r in range(args.repeats):
            plain.append(plain_loop(model_cfg, cfg, folder / "train.bin", warmup))
            light.append(lightning_path(model_cfg, cfg, folder, warmup, r))
            print(f"repeat {r}: plain {plain[-1]:,.0f} tok/s, lightning {light[-1]:,.0f} tok/s", flush=True)
    mp, ml = statistics.median(plain), statistics.median(light)
    print(
        f"\nthreads={torch.get_num_threads()} batch={cfg.batch_size}x{model_cfg.block_size} vocab={args.vocab} "
        f"steps={args.steps} repeats={args.repeats}\n"
        f"median tokens/s: plain torch {mp:,.0f} | lightning {ml:,.0f} | ratio lightning/plain {ml / mp:.3f}"
    )


if __name__ == "__main__":
    main()
