"""Feature families across the sizes of one seed: which features of a larger dictionary split a smaller one's.

The rule. Take two sizes S < L of one seed, consecutive in the sweep. Every feature c of L has its best match in S
(its parent candidate: the S atom of largest cosine) and the p-value of that match under S's nulls, both already
measured by the per-feature verdicts (verdicts.py: ``Verdicts.matches[(L, S)]``). Benjamini-Hochberg over L's
features turns them into q-values; c is a *child* of its best match when q <= ``analysis.fdr``. Many children may
share one parent (many-to-one): that parent *splits*. No cosine floor: a split's children sit at cosines well below
``analysis.match_cosine`` from their parent (each carries only part of it), and beyond the null is what makes them
kin rather than chance neighbours.

Per size pair: parents with no child *vanish*, with one *persist*, with two or more *split*; children with no parent
are *new*. How well a split's children span their parent is described (not decided) by the residual of a
non-negative least-squares fit ``parent ~ children @ w, w >= 0`` (unit atoms: 0 is spanned exactly, 1 orthogonal).

A *family* is a tree: a feature of the smallest size (or a new feature of a larger one) and its descendants through
the chain of pairs. On synthetic data with a hierarchy (``data.groups``: true features made as splits of a parent
direction), ``truth_rows`` scores each split: its children's true features (best true match above
``analysis.recovered_cosine``) should be distinct parts of one group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.optimize

from sae_sweep.analysis.measures.features import Key
from sae_sweep.analysis.measures.inference import bh_qvalues, wilson_interval
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.analysis.measures.verdicts import Atoms, Verdicts, atoms_of, feature_verdicts
from sae_sweep.analysis.settings import AnalysisConfig


@dataclass
class Families:
    """The family structure of one variant: links between consecutive sizes of each seed, and the trees."""

    # (smaller, larger) -> (parent index in the smaller (J_larger,), -1 where none; cosine to it (J_larger,))
    links: dict[tuple[Key, Key], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    pairs: list[dict] = field(default_factory=list)  # one row per size pair and seed (pair_row)
    trees: list[dict] = field(default_factory=list)  # one row per family (tree_rows)
    # (size, seed, feature) -> the family it belongs to ("s0-J256-17": its seed, root size, root feature)
    member_of: dict[tuple[int, int, int], str] = field(default_factory=dict)


def chains(keys: list[Key]) -> list[tuple[Key, Key]]:
    """Consecutive (smaller, larger) sizes of each seed, seeds ascending."""
    out = []
    for s in sorted({k[1] for k in keys}):
        sizes = sorted(k[0] for k in keys if k[1] == s)
        out += [((a, s), (b, s)) for a, b in zip(sizes, sizes[1:], strict=False)]
    return out


def parents(v: Verdicts, small: Key, large: Key, cfg: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """(each feature of ``large``'s parent in ``small``, -1 where its match is not beyond the null; its cosine)."""
    cos, idx, p, _ = v.matches[(large, small)]
    kin = bh_qvalues(p) <= cfg.fdr
    return np.where(kin, idx, -1), cos


def span_residual(parent: np.ndarray, children: np.ndarray) -> float:
    """||parent - children^T w|| at the best w >= 0: parent (d,) unit, children (n, d) unit rows."""
    return float(scipy.optimize.nnls(children.T.astype(np.float64), parent.astype(np.float64))[1])


def pair_row(small: Key, large: Key, parent: np.ndarray, cos: np.ndarray, atoms: dict[Key, Atoms]) -> dict:
    """What happened between two sizes: parents vanished, persisting, split (and into how many), children new."""
    n_parents = atoms[small].rows.shape[0]
    kids = np.bincount(parent[parent >= 0], minlength=n_parents)  # (J_small,) children per parent
    split = np.flatnonzero(kids >= 2)
    rows_s, rows_l = atoms[small].rows, atoms[large].rows
    residuals = [span_residual(rows_s[i], rows_l[parent == i]) for i in split]
    return {"seed": small[1], "smaller": small[0], "larger": large[0],
            "parents": n_parents, "vanished": int((kids == 0).sum()), "persisted": int((kids == 1).sum()),
            "split": int(split.size), "children_of_splits": int(kids[split].sum()),
            "max_children": int(kids.max()) if kids.size else 0,
            "new": int((parent < 0).sum()), "children": int(parent.size),
            "median_child_cos": float(np.median(cos[parent >= 0])) if (parent >= 0).any() else None,
            "median_split_residual": float(np.median(residuals)) if residuals else None}  # fmt: skip


def tree_rows(seed: int, sizes: list[int], links: dict, atoms: dict[Key, Atoms]) -> tuple[list[dict], dict]:
    """One row per family of ``seed`` (sizes ascending) and (size, seed, feature) -> its family's id."""
    member_of: dict[tuple[int, int, int], str] = {}
    for i, j in enumerate(sizes):
        parent = links[((sizes[i - 1], seed), (j, seed))][0] if i else np.full(atoms[(j, seed)].rows.shape[0], -1)
        for f, p in enumerate(parent):
            member_of[(j, seed, f)] = member_of[(sizes[i - 1], seed, int(p))] if p >= 0 else f"s{seed}-J{j}-{f}"
    by_family: dict[str, list[tuple[int, int]]] = {}
    for (j, _, f), fam in member_of.items():
        by_family.setdefault(fam, []).append((j, f))
    rows = []
    for fam, members in by_family.items():
        row = {"family": fam, "seed": seed, "born": members[0][0], "root": members[0][1], "members": len(members)}
        cos, firing = [], []
        for j, f in members:
            ff = atoms[(j, seed)].firing
            firing.append(f"{ff[f]:.3g}" if ff is not None else "")
        for j, f in members[1:]:
            i = sizes.index(j)
            link_parent, link_cos = links[((sizes[i - 1], seed), (j, seed))]
            cos.append(f"{link_cos[f]:.3f}" if link_parent[f] >= 0 else "")
        row.update({f"J{j}": " ".join(str(f) for k, f in members if k == j) for j in sizes})
        row.update(cos_to_parent=" ".join(c for c in cos if c), firing=" ".join(firing))
        rows.append(row)
    rows.sort(key=lambda r: (-r["members"], r["born"], r["root"]))
    return rows, member_of


def feature_families(atoms: dict[Key, Atoms], v: Verdicts, cfg: AnalysisConfig) -> Families:
    """The families of every seed of one variant, from its per-feature verdicts' matches."""
    out = Families()
    keys = sorted(atoms)
    for small, large in chains(keys):
        out.links[(small, large)] = parents(v, small, large, cfg)
        out.pairs.append(pair_row(small, large, *out.links[(small, large)], atoms))
    for s in sorted({k[1] for k in keys}):
        sizes = sorted(k[0] for k in keys if k[1] == s)
        rows, member_of = tree_rows(s, sizes, out.links, atoms)
        out.trees += rows
        out.member_of.update(member_of)
    return out


def truth_rows(fam: Families, atoms: dict[Key, Atoms], true: np.ndarray, groups: np.ndarray, cfg) -> list[dict]:
    """Per size pair of each seed, the splits scored against a known hierarchy: ``groups`` (n_true,) is each true
    feature's group (-1: in none). A split is *scored* when two or more of its children match a true feature
    (MCS > analysis.recovered_cosine), and *true* when those are distinct true features of one group."""
    out = []
    for (small, large), (parent, _) in sorted(fam.links.items(), key=lambda kv: (kv[0][0][1], kv[0][0][0])):
        mcs, idx = max_cosine_similarity(atoms[large].rows, true, chunk_size=cfg.chunk_size, device=cfg.device)
        named = np.where(mcs > cfg.recovered_cosine, idx, -1)  # (J_large,) each child's true feature, or -1
        scored, hits, duplicates = score_splits(parent, named, groups)
        linked = np.flatnonzero(parent >= 0)
        shuffled = parent.copy()  # chance: the same children and split sizes, parents dealt at random
        shuffled[linked] = np.random.default_rng([cfg.seed, 31, small[1], small[0]]).permutation(parent[linked])
        chance_scored, chance_hits, _ = score_splits(shuffled, named, groups)
        lo, hi = wilson_interval(hits, scored, cfg.level) if scored else (None, None)
        out.append({"seed": small[1], "smaller": small[0], "larger": large[0], "splits_scored": scored,
                    "true_splits": hits, "duplicates": duplicates, "precision": hits / scored if scored else None,
                    "precision_lo": lo, "precision_hi": hi,
                    "chance_scored": chance_scored, "chance_hits": chance_hits,
                    "chance_precision": chance_hits / chance_scored if chance_scored else None})  # fmt: skip
    return out


def score_splits(parent: np.ndarray, named: np.ndarray, groups: np.ndarray) -> tuple[int, int, int]:
    """(splits with two or more children naming a true feature, those whose named parts are distinct members of one
    group, those naming one true feature twice or more and nothing outside its group: a duplicate, not a split):
    ``parent`` (J,) each child's parent or -1, ``named`` (J,) its true feature or -1, ``groups`` (n_true,)."""
    scored = hits = duplicates = 0
    for p in np.unique(parent[parent >= 0]):
        parts = named[(parent == p) & (named >= 0)]
        if parts.size < 2:
            continue
        scored += 1
        g = groups[parts]
        one_group = bool((g == g[0]).all()) and (g[0] >= 0 or np.unique(parts).size == 1)
        distinct = np.unique(parts).size == parts.size
        hits += int(one_group and distinct and g[0] >= 0)
        duplicates += int(one_group and not distinct)
    return scored, hits, duplicates


def families_of(run) -> Families:
    """The families of an analysed run (``AnalysedRun``), from its verdicts' matches (computed once and shared)."""
    return feature_families(atoms_of(run), run.measured(feature_verdicts), run.results.config)
