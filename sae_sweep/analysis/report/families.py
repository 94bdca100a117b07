"""Section "Feature families": how the features of one seed split as the dictionary grows (measures/families.py).
Figure 22, families_pairs.csv (a row per size pair and seed), families.csv (a row per family), on synthetic data
with a hierarchy families_truth.csv, and their Findings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sae_sweep.analysis.measures.families import Families, families_of
from sae_sweep.analysis.measures.families import truth_rows as family_truth_rows
from sae_sweep.analysis.measures.inference import score_difference, wilson_interval
from sae_sweep.analysis.measures.verdicts import atoms_of
from sae_sweep.analysis.report.plots import save
from sae_sweep.analysis.report.section import Plot, ReportInput, Section, Table, pct
from sae_sweep.truth import SyntheticConfig, true_groups

TOP = 20  # families drawn and listed in report.md


def _families(rep: ReportInput) -> Families:
    return rep.run.measured(families_of)


def hierarchy_of(run) -> np.ndarray | None:
    """(n_true,) the true features' groups when the run's synthetic data has a hierarchy, else None."""
    recorded = next(iter(run.dicts.values())).config.synthetic if run.dicts else None
    if run.true_features is None or not recorded or not recorded.get("groups"):
        return None
    return true_groups(SyntheticConfig.from_dict(recorded))


def _truth(run) -> list[dict]:
    groups = hierarchy_of(run)
    if groups is None:
        return []
    return family_truth_rows(run.measured(families_of), atoms_of(run), run.true_features, groups, run.results.config)


def pair_rows(rep: ReportInput) -> list[dict]:
    return _families(rep).pairs


def tree_table(rep: ReportInput) -> list[dict]:
    return _families(rep).trees


def top_rows(rep: ReportInput) -> list[dict]:
    """The first seed's largest families, members counted per size."""
    trees = _families(rep).trees
    if not trees:
        return []
    seed = min(r["seed"] for r in trees)
    sizes = [k for k in trees[0] if k.startswith("J")]
    return [{"family": r["family"], "members": r["members"], **{j: len(r[j].split()) for j in sizes}}
            for r in trees if r["seed"] == seed][:TOP]  # fmt: skip


def fig_families(rep: ReportInput, path: Path) -> Path | None:
    """Figure 22: what the parents of each size pair become (first seed), and the largest families by size."""
    pairs = [r for r in _families(rep).pairs if r["seed"] == min(p["seed"] for p in _families(rep).pairs)]
    top = top_rows(rep)
    if not pairs or not top:
        return None
    fig = Figure(figsize=(11, 4.5))
    a1, a2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    x = np.arange(len(pairs))
    bottom = np.zeros(len(pairs))
    for key, colour in (("persisted", "tab:blue"), ("split", "tab:green"), ("vanished", "tab:gray")):
        h = np.array([r[key] / r["parents"] for r in pairs])
        a1.bar(x, h, bottom=bottom, color=colour, label=key)
        bottom += h
    for xi, r in zip(x, pairs, strict=True):
        a1.text(xi, 1.01, f"{r['split']} split\n{r['new']} new", ha="center", va="bottom", fontsize=7)
    a1.set_xticks(x, [f"{r['smaller']}->{r['larger']}" for r in pairs], fontsize=8)
    a1.set(ylim=(0, 1.18), ylabel="share of the smaller size's features", title=f"parents, seed {pairs[0]['seed']}")
    a1.legend(fontsize=7, loc="lower left")
    sizes = [k for k in top[0] if k.startswith("J")]
    grid = np.array([[r[j] for j in sizes] for r in top], dtype=float)
    a2.imshow(np.log2(np.maximum(grid, 0.5)), aspect="auto", cmap="Greens")
    for (i, k), n in np.ndenumerate(grid):
        dark = n > np.sqrt(grid.max())  # the colour is log2(n): past half its range the cell is dark
        a2.text(k, i, f"{int(n)}" if n else "", ha="center", va="center", fontsize=6, color="white" if dark else "k")
    a2.set_xticks(range(len(sizes)), [s[1:] for s in sizes], fontsize=8)
    a2.set_yticks(range(len(top)), [r["family"] for r in top], fontsize=6)
    a2.set(xlabel="dictionary size", title=f"the {len(top)} largest families: members per size")
    fig.suptitle("Fig. 22: feature families across sizes")
    return save(fig, path)


def splitting(rep: ReportInput) -> str | None:
    """The first seed's pairs: how many features split, into how many, vanish, and are new."""
    pairs = _families(rep).pairs
    if not pairs:
        return None
    seed = min(r["seed"] for r in pairs)
    parts = "; ".join(
        f"{r['smaller']}->{r['larger']}: {r['split']} split into {r['children_of_splits']} children, "
        f"{r['persisted']} persisted, {r['vanished']} vanished, {r['new']} new"
        for r in pairs
        if r["seed"] == seed
    )
    return (
        f"Feature families (seed {seed}; a feature of the larger size is a child of its best match in the smaller one "
        f"when that match is beyond the null at a false discovery rate of {rep.cfg.fdr:g}): {parts}."
    )


def pooled_truth(rows: list[dict]) -> list[dict]:
    """``families_truth.csv``'s rows summed over seeds, one per size pair."""
    out: dict[tuple[int, int], dict] = {}
    for r in rows:
        zero = {"scored": 0, "hits": 0, "duplicates": 0, "chance_scored": 0, "chance_hits": 0}
        acc = out.setdefault((r["smaller"], r["larger"]), {"smaller": r["smaller"], "larger": r["larger"], **zero})
        acc["scored"] += r["splits_scored"]
        acc["hits"] += r["true_splits"]
        acc["duplicates"] += r["duplicates"]
        acc["chance_scored"] += r["chance_scored"]
        acc["chance_hits"] += r["chance_hits"]
    return [out[k] for k in sorted(out)]


def truth(rep: ReportInput) -> str | None:
    """On data with a known hierarchy: each size pair's split precision (seeds pooled), held against the same
    children with their parents shuffled by the interval of the difference."""
    rows = [r for r in pooled_truth(rep.run.measured(_truth)) if r["scored"]]
    if not rows:
        return None
    parts = []
    for r in rows:
        lo, hi = wilson_interval(r["hits"], r["scored"], rep.cfg.level)
        share = f"{pct(r['hits'] / r['scored'])} [{pct(lo)}, {pct(hi)}]"
        text = f"{r['smaller']}->{r['larger']}: {r['hits']} of {r['scored']}, {share} ({r['duplicates']} duplicates)"
        if r["chance_scored"]:
            d, d_lo, _ = score_difference(r["hits"], r["scored"], r["chance_hits"], r["chance_scored"], rep.cfg.level)
            word = "above" if d_lo > 0 else "not distinguishable from"
            text += f", {word} {pct(r['chance_hits'] / r['chance_scored'])} with parents shuffled"
        parts.append(text)
    return (
        "Against the known hierarchy: of the splits with two or more children matching true features, those whose "
        f"children are distinct parts of one true group (seeds pooled, {rep.cfg.level:.0%} Wilson intervals; "
        "duplicates: children matching one true feature twice; shuffled: the same children dealt to random parents, "
        f"compared by the interval of the difference): {'; '.join(parts)}."
    )


def _text(rep: ReportInput) -> str:
    return (
        "Within each seed, every feature of a dictionary is linked to its best match in the next smaller size when "
        f"that match is beyond the null (the verdicts' p-values, Benjamini-Hochberg at {rep.cfg.fdr:g} over the larger "
        "dictionary's features; no cosine floor, many children to one parent allowed). A parent with no child "
        "vanished, with one persisted, with two or more split; a child with no parent is new. "
        "`median_split_residual`: how far a split parent lies from the non-negative span of its children (0: inside "
        "it, 1: orthogonal). A family is a tree: a feature of the smallest size, or a new one, with its descendants; "
        "`families.csv` lists every family with its members' indices per size, their cosines to their parents and "
        "their firing frequencies."
    )


SECTION = Section(
    heading="Feature families",
    text=_text,
    plot=Plot("fig22", "fig22_families.png", fig_families),
    tables=(
        Table("per size pair", "families_pairs.csv", pair_rows),
        Table(f"the {TOP} largest families of the first seed (members per size)", "families_top.csv", top_rows),
        Table("against a known hierarchy", "families_truth.csv", lambda rep: rep.run.measured(_truth), optional=True),
        Table("every family", "families.csv", tree_table, markdown=False),
    ),
    findings=(splitting, truth),
    shown=lambda rep: bool(rep.run.dicts),
)
