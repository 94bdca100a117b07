"""The verdicts on dictionaries of random activation rows, beside the learned ones: does ``real`` beat them?

Random rows of the activations match each other far more closely than learned features match across seeds
(repeated contexts repeat rows; on the demo, 10% of 256 random rows have a match above 0.99 among 256 others), so
"found again in another seed" is no evidence that a feature is more than a typical activation unless learned
dictionaries are called real more often than row dictionaries are. For each size of an analysed variant, as many
row dictionaries of J distinct rows as the size has seeds (the learned features' references, like for like) get the
verdicts with the run's own settings, nulls and match floors (calibrated or fixed); the share of their features
called real is set against the share of the learned dictionaries' live features called real, with the Newcombe
interval of the difference (the features counted as independent binomial trials, as elsewhere in the report).

The row dictionaries are drawn from the first half of the training rows and the nulls' own rows (the data's
moment; the row null's queries) from the second, so that no null query is one of the dictionaries' rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sae_sweep.analysis.measures.inference import score_difference
from sae_sweep.analysis.measures.nulls import activation_dictionary
from sae_sweep.analysis.measures.verdicts import Atoms, Verdicts, activations_of, feature_verdicts, verdicts


@dataclass(frozen=True)
class RowNull:
    """One size: the row dictionaries' real calls beside the learned dictionaries'."""

    dict_size: int
    floor: float  # the match floor both were judged at
    row_features: int  # features of the row dictionaries (all seeds)
    row_real: int
    learned_features: int  # live features of the learned dictionaries of the size (all seeds)
    learned_real: int
    difference: float  # learned share minus row share, and its interval
    lo: float
    hi: float

    @property
    def row_share(self) -> float:
        return self.row_real / self.row_features

    @property
    def learned_share(self) -> float:
        return self.learned_real / self.learned_features if self.learned_features else float("nan")

    @property
    def beats(self) -> bool:
        """Whether learned features are called real more often than rows, beyond the interval: lo > 0."""
        return self.lo > 0


def row_dictionaries(acts, j: int, seeds: int, seed: int) -> dict:
    """``seeds`` dictionaries of ``j`` activation rows (distinct across all of them), keyed as seeds of size j."""
    rows = activation_dictionary(acts, seeds * j, np.random.SeedSequence([seed, 31, j]))
    return {(j, s): Atoms(f"rows-J{j}-s{s}", part, None) for s, part in enumerate(np.split(rows, seeds))}


def compare(learned: Verdicts, rows: Verdicts, j: int, floor: float, level: float) -> RowNull:
    """The two tables' real calls at size ``j``, and the interval of the difference of their shares."""
    mine = learned.table[learned.table["dict_size"] == j]
    live = mine[mine["verdict"] != "dead"]
    k1, n1 = int((live["verdict"] == "real").sum()), len(live)
    k2, n2 = int((rows.table["verdict"] == "real").sum()), len(rows.table)
    d, lo, hi = score_difference(k1, n1, k2, n2, level) if n1 else (float("nan"),) * 3
    return RowNull(j, floor, n2, k2, n1, k1, d, lo, hi)


def row_null(run) -> list[RowNull]:
    """Per size of an analysed variant with more seeds than analysis.min_replications (so that its features have
    enough references to be called real): the row dictionaries' verdicts beside the learned ones'. Nothing without
    the activation cache (the rows to draw)."""
    cfg = run.results.config
    acts = activations_of(run.dicts, run.cache_dir)
    learned = run.measured(feature_verdicts)
    if acts is None or learned.table is None:
        return []
    half = len(acts) // 2
    drawn, nulls = acts[:half], acts[half:]  # a memmap's halves: nothing read but the rows drawn
    out = []
    for j in sorted({k[0] for k in run.dicts}):
        seeds = sum(1 for k in run.dicts if k[0] == j)
        if seeds <= cfg.min_replications:  # min_replications >= 1 (AnalysisConfig): two seeds at least
            continue
        floor = learned.floor(j, cfg)
        rows = verdicts(row_dictionaries(drawn, j, seeds, cfg.seed), cfg, nulls, floors={j: floor})
        out.append(compare(learned, rows, j, floor, cfg.level))
    return out
