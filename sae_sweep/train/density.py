"""The one figure training draws: a dictionary's feature-density histogram, saved beside it at the end of a job.

matplotlib's object API only (a ``Figure`` and its Agg canvas): no pyplot state and no backend switch, so importing
the package or running a job never changes a notebook's matplotlib.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def density_figure(counts: np.ndarray, n: int, title: str, path: Path) -> Path:
    """Histogram of log10 firing frequency over ``n`` held-out activations; dead features in their own red bar."""
    live = counts[counts > 0]
    dead = int((counts == 0).sum())
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    if live.size:
        ax.hist(np.log10(live / n), bins=50, color="tab:blue", label=f"live ({live.size})")
    ax.bar([np.log10(0.5 / n)], [dead], width=0.1, color="tab:red", label=f"dead ({dead})")
    ax.set(xlabel="log10 firing frequency (held-out activations)", ylabel="features", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
