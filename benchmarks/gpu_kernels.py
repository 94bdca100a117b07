"""The CUDA paths of sae-sweep checked and timed in one process, for ``benchmarks/gpu_check.py`` (its step ``kernels``).

Each check runs on its own and records ``ok`` or the error, so one failure does not hide the others:

* ``sae_step``: the hand-written SAE step (dense and sparse paths) against autograd on the device, in float64 and
  float32, with random and mostly-negative encoder biases (about half, and a few percent, of the codes positive).
* ``sae_timing``: one training step as ``SAEModule.one_step`` takes it (our gradients, the finite-loss check, fused
  Adam, decoder renormalisation, firing record), batch 256, d_in 128, from a trained-like state (L0 20), dense and
  sparse, per dictionary size: ms per step, activations/s, and the peak memory torch allocated.
* ``sae_bf16``: what ``sae.precision=bf16-mixed`` runs (autograd under bf16 autocast): finite, near fp32's loss.
* ``mcs``: the MCS kernel on the device against the CPU's (values and indices), and its time at 32768 x 65536.
* ``gpt``: the default GPT (vocab 4096, batch 32 x 256) trained for a few steps with AdamW under bf16 autocast (on the
  CPU: float32): a finite, falling loss, ms per step and tokens/s without Lightning, peak memory.
* ``harvest``: layer-2 MLP activations of one seeded GPT on the device against the CPU's.
* ``collective``: a one-process ``torch.distributed`` group (NCCL on CUDA, gloo on the CPU) and one all-reduce.

    python benchmarks/gpu_kernels.py --device cuda --json kernels.json
    python benchmarks/gpu_kernels.py --device cpu --quick   # the same checks, small, on the CPU (the tests)

Prints one line per check and writes every figure to ``--json``; exit status 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sae_sweep.analysis.measures.mcs import max_cosine_similarity  # noqa: E402
from sae_sweep.train.gpt import GPT, GPTConfig  # noqa: E402
from sae_sweep.train.harvest import mlp_activations  # noqa: E402
from sae_sweep.train.sae import SAEConfig, SparseAutoencoder  # noqa: E402

D_IN, BATCH, L1 = 128, 256, 1e-3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def autograd_grads(sae: SparseAutoencoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
    sae.zero_grad(set_to_none=True)
    out = sae.loss(x, L1)
    out["loss"].backward()
    return {name: p.grad.clone() for name, p in sae.named_parameters()} | {"mse": out["mse"].detach()}


def check_sae_step(device: torch.device, quick: bool) -> dict:
    """Both paths of the hand-written step against autograd, on the device; the largest relative differences."""
    J, B = (64, 32) if quick else (512, 256)
    result, worst = {}, 0.0
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        for positive in (0.5, 0.05):  # the fraction of positive codes: early training, and trained-like
            sae = SparseAutoencoder(D_IN, SAEConfig(dict_size=J, seed=3)).to(device=device, dtype=dtype)
            gen = torch.Generator().manual_seed(1)
            x = torch.randn(B, D_IN, generator=gen, dtype=torch.float64).relu().to(device=device, dtype=dtype)
            with torch.no_grad():
                pre = torch.addmm(sae.encoder_bias, x, sae.encoder.t())
                sae.encoder_bias -= torch.quantile(pre.flatten().double().cpu(), 1 - positive).item()
            ref = autograd_grads(sae, x)
            for path in ("dense", "sparse"):
                sae.zero_grad(set_to_none=True)
                got = sae.fused_grads(x, L1, path)
                diffs = {"mse": rel_diff(got["mse"], ref["mse"])}
                diffs |= {name: rel_diff(p.grad, ref[name]) for name, p in sae.named_parameters()}
                key = f"{str(dtype).removeprefix('torch.')}/{path}/positive{positive:g}"
                density = float((got["codes"] > 0).float().mean())
                result[key] = {"max_rel_diff": max(diffs.values()), "density": round(density, 4)}
                worst = max(worst, max(diffs.values()) / tol)
                if max(diffs.values()) > tol:
                    raise AssertionError(f"{key}: the hand-written step differs from autograd by {diffs} (tol {tol})")
    return {"cases": result, "worst_over_tolerance": worst}


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def trained_like(J: int, x: torch.Tensor, l0: int = 20) -> SparseAutoencoder:
    """An SAE whose encoder bias is lowered until about ``l0`` codes per row of ``x`` are positive (bench_sae.py's)."""
    sae = SparseAutoencoder(D_IN, SAEConfig(dict_size=J)).to(x.device)
    with torch.no_grad():
        pre = torch.addmm(sae.encoder_bias, x, sae.encoder.t())
        sae.encoder_bias -= pre.kthvalue(J - min(l0, J - 1), dim=1).values.median()
    return sae


def time_steps(sae: SparseAutoencoder, xs: list[torch.Tensor], path: str, warmup: int) -> tuple[float, float]:
    """Seconds per step of SAEModule.one_step's work without Lightning; the codes' density at the end."""
    opt = torch.optim.Adam(sae.parameters(), lr=1e-7, fused=True)  # tiny: the state stays trained-like
    last_fired = torch.zeros(sae.dict_size, dtype=torch.long, device=xs[0].device)
    out = None

    def step(x, i):
        nonlocal out
        out = sae.fused_grads(x, L1, path)
        if not torch.isfinite(out["mse"].detach()):  # the module's NaN check: one sync per step
            raise FloatingPointError("the loss is not finite")
        opt.step()
        sae.normalize_decoder_()
        last_fired.masked_fill_(out["code_sums"] > 0, i)

    for i, x in enumerate(xs[:warmup]):
        step(x, i)
    sync(xs[0].device)
    t0 = time.perf_counter()
    for i, x in enumerate(xs[warmup:]):
        step(x, i)
    sync(xs[0].device)
    seconds = (time.perf_counter() - t0) / (len(xs) - warmup)
    return seconds, float((out["codes"] > 0).float().mean())


def check_sae_timing(device: torch.device, quick: bool, sizes: list[int]) -> dict:
    n, warmup = (12, 2) if quick else (300, 30)
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(n, BATCH, D_IN, generator=gen).relu().to(device)  # post-GELU-like: non-negative
    xs = list(data)
    rows = {}
    for J in sizes:
        row = {}
        for path in ("dense", "sparse"):
            sae = trained_like(J, data[0])
            reset_peak(device)
            seconds, density = time_steps(sae, xs, path, warmup)
            row[path] = {
                "ms_per_step": round(1e3 * seconds, 4),
                "activations_per_s": round(BATCH / seconds),
                "l0": round(density * J, 1),
                "peak_allocated_mb": peak_mb(device),
            }
        rows[str(J)] = row
    return {"batch": BATCH, "d_in": D_IN, "steps": n - warmup, "sizes": rows}


def check_sae_bf16(device: torch.device, quick: bool) -> dict:
    """sae.precision=bf16-mixed's path: the autograd loss under bf16 autocast, finite and close to fp32's."""
    J = 256 if quick else 4096
    x = torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(2)).relu().to(device)
    sae = trained_like(J, x)
    with torch.no_grad():
        ref = float(sae.loss(x, L1)["loss"])
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = sae.loss(x, L1)["loss"]
    loss.backward()
    finite = all(torch.isfinite(p.grad).all() for p in sae.parameters())
    loss = float(loss.detach())
    if not finite or abs(loss - ref) > 0.05 * abs(ref):
        raise AssertionError(f"bf16 autocast loss {loss} against fp32 {ref}; finite gradients: {finite}")
    return {"dict_size": J, "loss_bf16": loss, "loss_fp32": ref}


def check_mcs(device: torch.device, quick: bool) -> dict:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(512 if quick else 4096, D_IN, generator=gen)
    b = torch.randn(1024 if quick else 8192, D_IN, generator=gen)
    v_dev, i_dev = max_cosine_similarity(a, b, device=str(device))
    v_cpu, i_cpu = max_cosine_similarity(a, b, device="cpu")
    diff = float(abs(v_dev - v_cpu).max())
    same = float((i_dev == i_cpu).mean())
    if diff > 1e-5 or same < 0.99:
        raise AssertionError(f"MCS on {device} differs from the CPU's: values by {diff}, {same:.2%} equal indices")
    n_a, n_b = (2048, 4096) if quick else (32768, 65536)
    big_a, big_b = torch.randn(n_a, D_IN, generator=gen), torch.randn(n_b, D_IN, generator=gen)
    max_cosine_similarity(big_a[:64], big_b[:64], device=str(device))  # warm-up
    reset_peak(device)
    t0 = time.perf_counter()
    max_cosine_similarity(big_a, big_b, device=str(device))
    seconds = time.perf_counter() - t0
    return {
        "max_abs_diff_vs_cpu": diff,
        "same_index": same,
        "shape": f"{n_a}x{n_b}",
        "seconds": round(seconds, 4),
        "peak_allocated_mb": peak_mb(device),
    }


def check_gpt(device: torch.device, quick: bool) -> dict:
    """A few AdamW steps of the default GPT on random tokens: finite and falling loss, time per step."""
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=64 if quick else 256, vocab_size=512 if quick else 4096)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.optimizer_groups(0.1), lr=2e-3, betas=(0.9, 0.95))
    batch, n, warmup = (4, 6, 2) if quick else (32, 60, 10)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size + 1), generator=gen).to(device)
    x, y = tokens[:, :-1], tokens[:, 1:]  # one batch, repeated: the loss must fall
    autocast = device.type == "cuda"
    losses = []
    reset_peak(device)
    for i in range(n):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.detach())
    sync(device)
    seconds = (time.perf_counter() - t0) / (n - warmup)
    losses = [float(v) for v in losses]
    if not all(v == v and abs(v) < float("inf") for v in losses) or not losses[-1] < losses[0]:
        raise AssertionError(f"the GPT's loss is not finite and falling: {losses[0]:.4f} -> {losses[-1]:.4f}")
    return {
        "precision": "bf16 autocast" if autocast else "float32",
        "batch": f"{batch}x{cfg.block_size}",
        "ms_per_step": round(1e3 * seconds, 3),
        "tokens_per_s": round(batch * cfg.block_size / seconds),
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
        "peak_allocated_mb": peak_mb(device),
    }


def check_harvest(device: torch.device, quick: bool) -> dict:
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=512)).eval()
    idx = torch.randint(0, 512, (8 if quick else 64, 64), generator=torch.Generator().manual_seed(0))
    cpu = mlp_activations(model, idx, 2)
    dev = mlp_activations(model.to(device), idx.to(device), 2).cpu()
    diff = float((dev - cpu).abs().max())
    if diff > 1e-4:
        raise AssertionError(f"activations on {device} differ from the CPU's by {diff}")
    return {"max_abs_diff_vs_cpu": diff, "rows": int(cpu.shape[0])}


def check_collective(device: torch.device) -> dict:
    import torch.distributed as dist  # noqa: PLC0415

    backend = "nccl" if device.type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group(backend, init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            t = torch.arange(4.0, device=device)
            dist.all_reduce(t)
            sync(device)
            if t.tolist() != [0.0, 1.0, 2.0, 3.0]:
                raise AssertionError(f"all_reduce over one process changed the tensor: {t.tolist()}")
            info = {"backend": dist.get_backend()}
        finally:
            dist.destroy_process_group()
    if device.type == "cuda":
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (the default) or cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes and few steps (the tests, on the CPU)")
    ap.add_argument("--sizes", default="256,1024,4096,8192", help="dictionary sizes timed by sae_timing")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_kernels: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes = [s for s in sizes if s <= 1024][:2] or [256]
    checks = {
        "sae_step": lambda: check_sae_step(device, args.quick),
        "sae_timing": lambda: check_sae_timing(device, args.quick, sizes),
        "sae_bf16": lambda: check_sae_bf16(device, args.quick),
        "mcs": lambda: check_mcs(device, args.quick),
        "gpt": lambda: check_gpt(device, args.quick),
        "harvest": lambda: check_harvest(device, args.quick),
        "collective": lambda: check_collective(device),
    }
    results, failed = {"device": str(device), "torch": torch.__version__}, []
    for name, check in checks.items():
        t0 = time.perf_counter()
        try:
            results[name] = {"ok": True, **check()}
        except Exception as exc:  # noqa: BLE001 - every check reports, whatever the others did
            failed.append(name)
            tail = traceback.format_exc().strip().splitlines()[-12:]
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": tail}
        results[name]["seconds"] = round(time.perf_counter() - t0, 3)
        print(f"{name}: {'ok' if results[name]['ok'] else 'FAILED ' + results[name]['error']}", flush=True)
    results["failed"] = failed
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
