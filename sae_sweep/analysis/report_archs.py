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
    "true features recovered (MCS above `analysis.recovered_cosine`). A group of architectures trained under one "
    "`sae.tag` (`experiment=architectures`: `onepass`) is set beside the ReLU run of that tag, at equal budgets; "
    "without one, beside the main run (or the synthetic ReLU run), whose budget may differ (`activations_seen`)."
)


def fig_architectures(table: list[dict], path: Path) -> Path | None:
    """Figure 20: high-MCS fraction and cross-seed shared fraction per size, one line per architecture, data and tag;
    on synthetic data a third panel, the true features recovered (Wilson intervals on the fractions)."""
    lines = sorted({(r["arch"], r["data"], r.get("tag", "")) for r in table})
    if len(lines) < 2:
        return None
    panels = [("high_fraction", "high-MCS fraction (vs own reference)"), ("shared_fraction", "shared across seeds")]
    if any(r.get("recovered_fraction") is not None for r in table):
        panels.append(("recovered_fraction", "true features recovered"))
    fig = Figure(figsize=(5 * len(panels), 4))
    axes = fig.subplots(1, len(panels))
    for arch, data, tag in lines:
        rows = sorted((r for r in table if (r["arch"], r["data"], r.get("tag", "")) == (arch, data, tag)),
                      key=lambda r: r["dict_size"])  # fmt: skip
        style = "-" if data == "activations" else "--"
        label = f"{arch} ({data}{', ' + tag if tag else ''})"
        for ax, (key, _) in zip(axes, panels, strict=True):
            _line(ax, rows, key, style, label)
    for ax, (_, ylabel) in zip(axes, panels, strict=True):
        ax.set_xscale("log", base=2)
        ax.set(xlabel="dictionary size", ylabel=ylabel, ylim=(0, 1.02))
    axes[0].legend(fontsize=7)
    fig.suptitle("Fig. 20: architectures side by side")
    return save(fig, path)


def _line(ax, rows: list[dict], key: str, style: str, label: str) -> None:
    """One architecture's ``key`` fraction against size, with its interval (``<stem>_lo``, ``_hi``) where given."""
    pts = [r for r in rows if r.get(key) is not None]
    if not pts:
        return
    stem = key.removesuffix("_fraction")
    y = [r[key] for r in pts]
    err = [[v - r[f"{stem}_lo"] for v, r in zip(y, pts, strict=True)],
           [r[f"{stem}_hi"] - v for v, r in zip(y, pts, strict=True)]]  # fmt: skip
    ax.errorbar([r["dict_size"] for r in pts], y, yerr=err, marker="o", ls=style, label=label, capsize=2)


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
