"""What a job will need in memory, and what the machine it runs on has: a run that cannot fit is refused in one line
before any work (rules.py's ``sae_fits_memory``), instead of running out of memory inside training with a traceback.

``sae_peak_bytes`` is a pure function of the settings: a floor of one SAE training process's peak, counting only what
it must hold at once, so it never refuses a run that would fit. ``available_bytes`` reads the machine: the free
memory of the first CUDA device, or the RAM the kernel says is available (/proc/meminfo's MemAvailable, else psutil
when installed); None where neither can be read (then nothing is refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

FP32 = 4  # bytes per float32: parameters, their gradients and Adam's moments stay fp32 under mixed precision
HALF = 2  # bytes per bf16/fp16 activation under autocast (sae.precision=bf16-mixed or 16-mixed)
PARAM_COPIES = 4  # the parameter itself, its gradient, and Adam's exp_avg and exp_avg_sq


def sae_peak_bytes(d_in: int, dict_size: int, batch_size: int, *, tied: bool = False, decoder_bias: bool = False,
                   extra_params: int = 0, activation_bytes: int = FP32) -> int:  # fmt: skip
    """A floor of one process's peak memory while it trains an SAE, in bytes.

    Parameters: the decoder (d_in, J), the encoder (J, d_in) unless tied, the encoder bias (J,), the decoder bias
    (d_in,) when there is one, and what the architecture adds (``extra_params``: JumpReLU's J thresholds), each held
    ``PARAM_COPIES`` times in fp32. Activations: the (batch, J) codes and their gradient, at ``activation_bytes``.
    Work buffers, the held-out rows and the allocator's slack come on top, so the true peak is higher.
    """
    params = dict_size * d_in * (1 if tied else 2) + dict_size + (d_in if decoder_bias else 0) + extra_params
    return PARAM_COPIES * FP32 * params + 2 * batch_size * dict_size * activation_bytes


class Available(NamedTuple):
    bytes: int
    where: str  # for messages: "of RAM available", "free on cuda:0"
    shared: bool  # True: the RAM, shared by every process of the job on this machine; False: one device's own


def available_bytes(accelerator: str) -> Available | None:
    """What this machine can give a job on ``accelerator`` (trainer.accelerator); None if unknown."""
    if accelerator in ("gpu", "cuda", "auto"):
        import torch  # noqa: PLC0415 - only when a GPU may be asked for

        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(0)
            return Available(int(free), "free on cuda:0", shared=False)
    ram = _mem_available()
    return None if ram is None else Available(ram, "of RAM available", shared=True)


def _mem_available() -> int | None:
    """The kernel's estimate of the RAM a new process can take without swapping, in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # noqa: PLC0415 - optional: not a dependency
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def gib(n: float) -> str:
    """``n`` bytes for a message: "3.2 GiB", "1,863 GiB"."""
    value = n / 2**30
    return f"{value:,.0f} GiB" if value >= 100 else f"{value:.1f} GiB"
