"""What every figure shares: its colours and how it is saved.

matplotlib's object API only (a ``Figure`` per plot, saved through its Agg canvas): no pyplot state, no backend
switch at import, so a notebook that imports the package keeps its own matplotlib set-up.
"""

from __future__ import annotations

from pathlib import Path

LEARNED, RANDOM, NULL = "tab:blue", "tab:orange", "black"


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
