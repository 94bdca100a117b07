"""Rows to files and text: one CSV writer and one Markdown table for every table of the report."""

from __future__ import annotations

import csv
from pathlib import Path


def write_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` as a CSV with the first row's keys as its header; an empty file when there are none."""
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict], floats: str = "{:.4g}") -> str:
    if not rows:
        return "_(none)_\n"
    cols = list(rows[0])
    fmt = lambda v: floats.format(v) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def first_seed_rows(rows: list[dict]) -> list[dict]:
    """The rows of the smallest seed, by dictionary size (what a single-seed figure or sentence shows)."""
    if not rows:
        return []
    seed = min(r["seed"] for r in rows)
    return sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["dict_size"])


def row_of(rows: list[dict], **match) -> dict | None:
    """The first row whose columns equal ``match``."""
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)
