"""The per-feature verdicts held against what is known: the true features of synthetic data, and the note's split.

* ``truth_rows``: per size, the precision of ``real`` (the share of features called real whose atom has MCS above
  ``analysis.recovered_cosine`` against the true features) and its recall (the share of such true-matching features
  called real), each with a Wilson interval, the seeds pooled.
* ``budget_truth_rows``: the same recall and precision at every training budget the snapshots kept: verdicts made
  from every dictionary's state at that many activations seen (firing counted on its evaluation sample).
* ``split_rows``: per dictionary, how far the note's fixed split (MCS >= analysis.threshold against its seed's
  largest size) and the per-feature verdict agree, feature by feature.
"""

from __future__ import annotations

import numpy as np

from sae_sweep.analysis.measures.budget import states
from sae_sweep.analysis.measures.features import Key
from sae_sweep.analysis.measures.inference import wilson_interval
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.analysis.measures.verdicts import Atoms, Verdicts, verdicts
from sae_sweep.analysis.settings import AnalysisConfig


def _rate(k: int, n: int, level: float) -> tuple[float | None, float | None, float | None]:
    return (k / n, *wilson_interval(k, n, level)) if n else (None, None, None)


def truth_columns(table: np.ndarray, true: np.ndarray, rows: dict[str, np.ndarray], cfg: AnalysisConfig) -> dict:
    """Precision and recall of ``real`` over ``table``'s rows, against the true features (n_true, d_in); ``rows``:
    each dictionary's atoms by name."""
    truth_mcs = np.concatenate(
        [
            max_cosine_similarity(rows[n], true, chunk_size=cfg.chunk_size, device=cfg.device)[0]
            for n in table_names(table)
        ]
    )
    is_true = truth_mcs > cfg.recovered_cosine
    real = table["verdict"] == "real"
    hits = int(np.count_nonzero(real & is_true))
    precision, p_lo, p_hi = _rate(hits, int(real.sum()), cfg.level)
    recall, r_lo, r_hi = _rate(hits, int(is_true.sum()), cfg.level)
    return {"features": len(table), "true_matching": int(is_true.sum()), "called_real": int(real.sum()),
            "precision": precision, "precision_lo": p_lo, "precision_hi": p_hi,
            "recall": recall, "recall_lo": r_lo, "recall_hi": r_hi}  # fmt: skip


def table_names(table: np.ndarray) -> list[str]:
    """The dictionaries of a table, in its row order (each dictionary's rows are contiguous)."""
    names, first = np.unique(table["name"], return_index=True)
    return [str(n) for n in names[np.argsort(first)]]


def truth_rows(v: Verdicts, atoms: dict[Key, Atoms], true: np.ndarray, cfg: AnalysisConfig) -> list[dict]:
    """One row per dictionary size: the verdicts' precision and recall against the truth (seeds pooled)."""
    rows = {a.name: a.rows for a in atoms.values()}
    out = []
    for j in sorted({k[0] for k in atoms}):
        part = v.table[v.table["dict_size"] == j]
        out.append({"dict_size": j, "seeds": len(np.unique(part["seed"])), **truth_columns(part, true, rows, cfg)})
    return out


def budget_truth_rows(dicts: dict, true: np.ndarray, cfg: AnalysisConfig, acts=None) -> list[dict]:
    """``truth_rows`` at every budget (activations seen) that two or more dictionaries' snapshots share."""
    axis = {k: {st.activations_seen: st for st in states(d)} for k, d in sorted(dicts.items()) if d.snapshots()}
    budgets = sorted({b for by in axis.values() for b in by})
    out = []
    for b in budgets:
        at = {k: by[b] for k, by in axis.items() if b in by}
        if len({k[1] for k in at}) < 2:
            continue  # one seed: no independent reference, nothing to call real
        atoms = {k: Atoms(f"{dicts[k].name}@{b}", st.rows, st.fired / st.dead_rows) for k, st in at.items()}
        v = verdicts(atoms, cfg, acts)
        out += [{"activations_seen": b, **r} for r in truth_rows(v, atoms, true, cfg)]
    return out


def split_rows(v: Verdicts, cfg: AnalysisConfig) -> list[dict]:
    """Per dictionary below its seed's largest size: the note's high/low split beside the verdict, feature by
    feature (``agreement``: high and real, or low and not real)."""
    out = []
    for name in table_names(v.table):
        t = v.table[v.table["name"] == name]
        if np.isnan(t["mcs_reference"]).all():
            continue  # its seed's largest size: no MCS against a larger one
        high, real = t["mcs_reference"] >= cfg.threshold, t["verdict"] == "real"
        out.append({"name": name, "dict_size": int(t["dict_size"][0]), "seed": int(t["seed"][0]), "n": len(t),
                    "high": int(high.sum()), "real": int(real.sum()), "high_and_real": int((high & real).sum()),
                    "high_not_real": int((high & ~real).sum()), "real_not_high": int((real & ~high).sum()),
                    "dead": int((t["verdict"] == "dead").sum()),
                    "agreement": float((high == real).mean())})  # fmt: skip
    return out


def replicable_rows(v: Verdicts, atoms: dict[Key, Atoms], true: np.ndarray, cfg: AnalysisConfig,
                    estimates: dict | None = None) -> list[dict]:  # fmt: skip
    """Per dictionary: precision of ``real`` (its real calls within ``recovered_cosine`` of a true feature) and its
    recall of the *replicable* truth (the true features that every seed's dictionary of its size holds within
    ``recovered_cosine``; found: its nearest atom here is called real), beside the calibration's estimated recall
    (``estimates``: dict size -> SizeCalibration) and whether the measured recall lies inside its interval."""
    near = {
        k: max_cosine_similarity(true, a.rows, chunk_size=cfg.chunk_size, device=cfg.device) for k, a in atoms.items()
    }
    out = []
    for k in sorted(atoms):
        t = v.table[v.table["name"] == atoms[k].name]
        real = t["verdict"] == "real"
        hit = max_cosine_similarity(atoms[k].rows, true, chunk_size=cfg.chunk_size, device=cfg.device)[0]
        hit = hit > cfg.recovered_cosine
        same_size = [near[o][0] > cfg.recovered_cosine for o in atoms if o[0] == k[0]]
        replicable = np.logical_and.reduce(same_size) if len(same_size) > 1 else np.zeros(len(true), dtype=bool)
        found = int(real[near[k][1][replicable]].sum())
        est = (estimates or {}).get(k[0])
        recall = found / replicable.sum() if replicable.any() else None
        inside = None
        if est is not None and est.recall is not None and recall is not None:
            inside = bool(est.recall_lo <= recall <= est.recall_hi)
        out.append({"name": atoms[k].name, "dict_size": k[0], "seed": k[1], "called_real": int(real.sum()),
                    "precision": float((real & hit).sum() / real.sum()) if real.any() else None,
                    "replicable": int(replicable.sum()), "found": found, "recall": recall,
                    "match_floor": v.floor(k[0], cfg),
                    "estimated_recall": est.recall if est else None,
                    "estimated_lo": est.recall_lo if est else None, "estimated_hi": est.recall_hi if est else None,
                    "inside": inside})  # fmt: skip
    return out
