"""Is the low-MCS mode random? Permutation tests of each dictionary's low mode against two nulls.

The note compares the learned MCS values below the cutoff with those of two random dictionaries. A difference found
that way has two possible sources: the low-MCS features themselves, or the learned reference they are scored
against (its atoms cluster, so it covers the sphere unevenly, like a random dictionary of fewer atoms). Each row here
tests the learned low mode against

* ``isotropic``: Rand 1's values below the cutoff (a random N(0, I) dictionary against a random reference), the
  note's comparison; and
* ``learned_reference``: random N(0, I) vectors scored against the *learned* reference of the same seed, which
  keeps the reference and replaces only the features. When the first test finds a difference and this one does
  not, the reference's geometry is enough to produce it.

Each test is ``inference.emd_permutation_test`` (W1, relabelling p-value) on the values below ``analysis.cutoff``.
"""

from __future__ import annotations

import numpy as np

from sae_sweep.analysis.measures.features import Key, decoder_rows
from sae_sweep.analysis.measures.inference import emd_permutation_test
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.analysis.measures.nulls import random_dictionary
from sae_sweep.analysis.measures.pairwise import Results
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary

NULLS = ("isotropic", "learned_reference")


def learned_reference_null(j: int, reference: np.ndarray, cfg: AnalysisConfig, seed: int) -> np.ndarray:
    """MCS (j,) of j random N(0, I) vectors against the rows of ``reference`` (M, K)."""
    rand = random_dictionary(j, reference.shape[1], seed)
    return max_cosine_similarity(rand, reference, chunk_size=cfg.chunk_size, device=cfg.device)[0]


def permutation_row(j: int, s: int, null: str, learned: np.ndarray, other: np.ndarray, cfg: AnalysisConfig, seed: int):
    """One permutation test of ``learned``'s values below the cutoff against ``other``'s; None if a side is empty."""
    a, b = learned[learned < cfg.cutoff], other[other < cfg.cutoff]
    if a.size == 0 or b.size == 0:
        return None
    w1, p = emd_permutation_test(a, b, cfg.n_perm, seed=seed)
    return {"dict_size": j, "seed": s, "null": null, "n_learned": a.size, "n_null": b.size, "emd": w1, "p": p}


def low_mode_tests(res: Results, dicts: dict[Key, Dictionary], cfg: AnalysisConfig) -> list[dict]:
    """A row per (size, seed, null): the learned low mode against the isotropic and the learned-reference nulls."""
    rows = []
    for s in res.seeds:
        if (res.reference, s) not in dicts:
            continue
        reference = decoder_rows(dicts[(res.reference, s)])
        for j in sorted(res.random):
            learned = res.vs_reference(j, s)
            if learned is None:
                continue
            draw = int(np.random.SeedSequence([cfg.seed, 12, j, s]).generate_state(1)[0])
            nulls = {
                "isotropic": res.random[j][0],
                "learned_reference": learned_reference_null(j, reference, cfg, draw),
            }
            for i, (name, other) in enumerate(nulls.items()):
                row = permutation_row(j, s, name, learned, other, cfg, seed=draw + i)
                if row is not None:
                    rows.append(row)
    return rows
