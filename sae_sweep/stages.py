"""Where a command's time went: its stages timed, and a short table of them at its end.

    stages = Stages()
    with stages("harvest") as made:
        acts = harvest(...)
        made(f"{len(acts)} activations")
    log.info("%s", stages.table("sae-L2-J1024-s0"))

prints::

    sae-L2-J1024-s0, where the time went:
      harvest        41.2 s  750,000 activations
      train         312.9 s  9,250 steps
      total         354.1 s
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Stages:
    """The stages of one command, in order: name, wall seconds, what each made."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[Callable[[str], None]]:
        """Time the block as stage ``name``; the function it yields records what the stage made."""
        made = [""]
        start = time.perf_counter()
        try:
            yield lambda what: made.__setitem__(0, what)
        finally:
            self.rows.append((name, time.perf_counter() - start, made[0]))

    def table(self, title: str) -> str:
        """The stages as lines under ``title``, with their total."""
        width = max([len(name) for name, _, _ in self.rows] + [5])
        lines = [f"{title}, where the time went:"]
        lines += [f"  {name:<{width}}  {seconds:8.1f} s  {made}".rstrip() for name, seconds, made in self.rows]
        lines.append(f"  {'total':<{width}}  {sum(s for _, s, _ in self.rows):8.1f} s")
        return "\n".join(lines)
