"""glibc's allocator kept from giving large freed blocks back to the kernel, for training on CPU.

torch on CPU makes every intermediate tensor afresh. glibc serves a block over its mmap threshold (128 kB at start,
raised as blocks are freed, up to 32 MB) with a fresh mapping and unmaps it when freed, so an 8 MB intermediate (the
(B, J) pre-activations at J=8192, or TopK's (nnz, d) gathers at B=256) costs ~2,000 page faults every step it is
made. The top-k architectures make several such tensors a step: their step at J=1024 ran 1.9x faster with large
blocks kept in the heap (``benchmarks/bench_archs.py --untuned`` against the default). Numerics are unchanged.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # the ceiling of glibc's own adjustment: blocks up to 32 MB come from the heap, reused
TRIM_THRESHOLD = 512 * 2**20  # free heap kept before any is returned to the kernel


def keep_freed_blocks() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (True when set; False off Linux or off glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library this process already has loaded
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
