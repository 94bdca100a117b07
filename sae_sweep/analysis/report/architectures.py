"""Section "Architectures": each architecture's dictionaries beside the ReLU + L1 runs on the same data
(measures/architectures.py). Figure 20, architectures.csv, architecture_stability.csv and two Findings; left out
when no other architecture than ReLU was trained."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from sae_sweep.analysis.measures.architectures import MIN_MODE
from sae_sweep.analysis.report.plots import save
from sae_sweep.analysis.report.section import Plot, ReportInput, Section, Table

INTRO = (
    "Each architecture's dictionaries (`sae.arch`, `experiment=architectures`) against their own largest size, "
    "beside the ReLU + L1 runs on the same data: the high-MCS fraction (Wilson interval), whether the MCS "
    "distribution shows the note's two modes, the low mode against Rand 1 (permutation test), and across the first "
    "two seeds the shared fraction (Hungarian cosine >= `analysis.shared_cosine`) and PW-MCC; on synthetic data the "
    "true features recovered (MCS above `analysis.recovered_cosine`). A group of architectures trained under one "
    "`sae.tag` (`experiment=architectures`: `onepass`) is set beside the ReLU run of that tag, at equal budgets; "
    "without one, beside the main run (or the synthetic ReLU run), whose budget may differ (`activations_seen`)."
)


def fig_architectures(rep: ReportInput, path: Path) -> Path | None:
    """Figure 20: high-MCS fraction and cross-seed shared fraction per size, one line per architecture, data and tag;
    on synthetic data a third panel, the true features recovered (Wilson intervals on the fractions)."""
    table = rep.architectures
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


def _tagged(tag: str) -> str:
    return f", sae.tag {tag}" if tag else ""


def _sizes(js: list[int]) -> str:
    return ", ".join(f"J={j}" for j in js) if js else "no size"


def modes_finding(rep: ReportInput) -> str | None:
    """Which architectures show the note's two modes, and at which sizes (first seed, per kind of data)."""
    table = rep.architectures
    parts = []
    for data, tag in sorted({(r["data"], r.get("tag", "")) for r in table}):
        group = [r for r in table if (r["data"], r.get("tag", "")) == (data, tag) and r["two_modes"] is not None]
        for arch in sorted({r["arch"] for r in group}):
            rows = sorted((r for r in group if r["arch"] == arch), key=lambda r: r["dict_size"])
            yes = [r["dict_size"] for r in rows if r["two_modes"]]
            no = [r["dict_size"] for r in rows if not r["two_modes"]]
            l0 = ", ".join(f"{r['l0']:.1f}" for r in rows if r["l0"] is not None)
            parts.append(
                f"{arch} on {data}{_tagged(tag)} (L0 {l0 or 'n/a'}): two modes at {_sizes(yes)}"
                + (f", not at {_sizes(no)}" if no else "")
            )
    if len(parts) < 2:
        return None
    return (
        f"Architectures side by side (first seed, each against its own largest size; two modes when the two-component "
        f"fit keeps a learned component by BIC whose mean MCS is at least the threshold, and each component holds at "
        f"least {MIN_MODE:.0%} of the features): " + "; ".join(parts) + "."
    )


def _budgets(t: dict) -> str:
    """The two sides' training budgets, when they differ (a difference that training length may explain)."""
    a, b = t.get("relu_seen"), t.get("topk_seen")
    if not a or not b or a == b:
        return ""
    return f" (trained on {a:,} and {b:,} activations: unequal budgets)"


def stability_finding(rep: ReportInput) -> str | None:
    """Paulo & Belrose's ordering (ReLU + L1 more stable across seeds than TopK), size by size, and overall."""
    steps, level = rep.stability, rep.cfg.level
    if not steps:
        return None
    parts = [
        f"J={t['dict_size']} ({t['data']}{_tagged(t.get('tag', ''))}): {100 * t['difference']:+.1f} points "
        f"[{100 * t['lo']:+.1f}, {100 * t['hi']:+.1f}]"
        + {"relu": ", ReLU more stable", "topk": ", TopK more stable", "none": ""}[t["more_stable"]]
        + _budgets(t)
        for t in steps
    ]
    verdicts = {t["more_stable"] for t in steps}
    if verdicts == {"relu"}:
        overall = "ReLU + L1 is the more stable at every size compared, as Paulo & Belrose found"
    elif verdicts == {"topk"}:
        overall = "TopK is the more stable at every size compared: the opposite of Paulo & Belrose's ordering"
    elif verdicts == {"none"}:
        overall = "no difference was detected at any size compared"
    else:
        overall = "the ordering differs between sizes"
    if any(_budgets(t) for t in steps):
        overall += "; the budgets differ, and this comparison does not separate training length from architecture"
    return (
        f"Cross-seed stability, ReLU minus TopK shared fraction between the first two seeds ({level:.0%} Newcombe "
        f"score interval of the difference): " + "; ".join(parts) + f". So {overall}."
    )


SECTION = Section(
    heading="Architectures",
    text=INTRO,
    plot=Plot("fig20", "fig20_architectures.png", fig_architectures),
    tables=(
        Table("architectures", "architectures.csv", lambda rep: rep.architectures),
        Table("ReLU against TopK across seeds", "architecture_stability.csv", lambda rep: rep.stability),
    ),
    findings=(modes_finding, stability_finding),
    shown=lambda rep: bool(rep.architectures),
)
