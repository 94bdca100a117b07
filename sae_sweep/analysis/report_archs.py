"""The report's section on SAE architectures: its two tables, Figure 20 and its Findings (architectures.py's rows)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from sae_sweep.analysis.architectures import modes_finding, stability, stability_finding
from sae_sweep.analysis.figures import save
from sae_sweep.analysis.report import markdown_table, write_csv

INTRO = (
    "Each architecture's dictionaries (`sae.arch`, `experiment=architectures`) against their own largest size, "
    "beside the ReLU + L1 runs on the same data: the high-MCS fraction (Wilson interval), whether the MCS "
    "distribution shows the note's two modes, the low mode against Rand 1 (permutation test), and across the first "
    "two seeds the shared fraction (Hungarian cosine >= `analysis.shared_cosine`) and PW-MCC; on synthetic data the "
    "true features recovered."
)


def fig_architectures(table: list[dict], path: Path) -> Path | None:
    """Figure 20: high-MCS fraction and cross-seed shared fraction per size, one line per architecture and data."""
    lines = sorted({(r["arch"], r["data"]) for r in table})
    if len(lines) < 2:
        return None
    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2)
    for arch, data in lines:
        rows = sorted((r for r in table if (r["arch"], r["data"]) == (arch, data)), key=lambda r: r["dict_size"])
        sizes = [r["dict_size"] for r in rows]
        style = "-" if data == "activations" else "--"
        a1.errorbar(sizes, [r["high_fraction"] for r in rows], marker="o", ls=style, label=f"{arch} ({data})",
                    yerr=[[r["high_fraction"] - r["high_lo"] for r in rows],
                          [r["high_hi"] - r["high_fraction"] for r in rows]])  # fmt: skip
        shared = [(r["dict_size"], r["shared_fraction"]) for r in rows if r["shared_fraction"] is not None]
        if shared:
            a2.plot(*zip(*shared, strict=True), marker="o", ls=style)
    for ax, ylabel in ((a1, "high-MCS fraction (vs own reference)"), (a2, "shared across seeds (Hungarian)")):
        ax.set_xscale("log", base=2)
        ax.set(xlabel="dictionary size", ylabel=ylabel, ylim=(0, 1.02))
    a1.legend(fontsize=7)
    fig.suptitle("Fig. 20: architectures side by side")
    return save(fig, path)


def write_architectures(table: list[dict], out: Path, level: float):
    """(figures {key: path}, the Markdown section, the Findings) for ``table``; nothing when it is empty."""
    if not table:
        return {}, "", []
    steps = stability(table, level)
    write_csv(out / "architectures.csv", table)
    write_csv(out / "architecture_stability.csv", steps)
    fig = fig_architectures(table, out / "fig20_architectures.png")
    md = f"### Architectures\n\n{INTRO}\n\n" + (f"![fig20]({fig.name})\n\n" if fig else "")
    md += f"#### architectures ([architectures.csv](architectures.csv))\n\n{markdown_table(table)}\n"
    md += "#### ReLU against TopK across seeds ([architecture_stability.csv](architecture_stability.csv))\n\n"
    md += markdown_table(steps) + "\n"
    found = [modes_finding(table), stability_finding(steps, level)]
    return ({"fig20": fig} if fig else {}), md, [f for f in found if f]
