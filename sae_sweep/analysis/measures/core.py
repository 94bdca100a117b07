"""The stable core of each size: the features every seed found, as one dictionary a researcher can take away.

For a size J trained on two or more seeds, a feature of the first seed's dictionary joins the core when, in every other
seed's dictionary of size J, its best match is found again (beyond the null at the verdicts' FDR and at least
``analysis.match_cosine`` close, as a verdict counts it) and is mutual (that match's own best match is it). Its group
is the feature and those matches, one per seed.

How an atom is made: the group's *medoid*, the member whose decoder atom has the largest summed cosine to the others
(the first seed's on a tie), taken whole with its encoder row and bias from its own dictionary. A ReLU feature's code
depends on nothing but its own row, so the core's codes are exactly its members' codes: with the core's decoder bias
b (the first seed's), the encoder bias is folded, ``b_enc' = b_enc + W_enc_j . (b - b_src)``, so that
``relu(W_enc_j (x - b) + b_enc')`` is the source dictionary's ``relu(W_enc_j (x - b_src) + b_enc)``. The core is built
for ReLU dictionaries only: a TopK or BatchTopK code depends on which other features compete, so a subset of them is
not the same code.

How much of the reconstruction the replicated features carry: the held-out FVU and L0 of the core beside the full
first-seed dictionary's, on the same held-out rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sae_sweep.analysis.measures.architectures import arch_of
from sae_sweep.analysis.measures.features import Key, decoder_rows
from sae_sweep.analysis.measures.inference import bh_qvalues
from sae_sweep.analysis.measures.verdicts import Verdicts, activation_cache, feature_verdicts, same
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary

EVAL_ROWS = 32_768  # held-out rows the FVU and L0 are measured on (the first ones of the cache's val split)


@dataclass
class Core:
    """One size's stable core: tensors as a dictionary holds them, and where each atom came from."""

    size: int
    seeds: list[int]
    members: np.ndarray  # (n, n_seeds) each core feature's index in each seed's dictionary (seeds in ``seeds`` order)
    medoid: np.ndarray  # (n,) which seed (a position in ``seeds``) gave each atom
    tensors: dict[str, torch.Tensor]  # decoder (d_in, n), encoder.weight (n, d_in), encoder.bias (n,), decoder_bias
    firing: np.ndarray | None  # (n,) the medoids' held-out firing frequencies
    mean_cos: np.ndarray  # (n,) mean cosine between the group's atoms
    metrics: dict  # fvu, l0 of the core and full_fvu, full_l0 of the first seed's dictionary; rows measured on


def replicated(v: Verdicts, size: int, seeds: list[int], cfg: AnalysisConfig) -> np.ndarray:
    """(n, len(seeds)) the groups: each first-seed feature found again, mutually, in every other seed's size-J
    dictionary, with its match's index there."""
    first = (size, seeds[0])
    keep = None
    cols = []
    for s in seeds[1:]:
        cos, idx, p, _ = v.matches[(first, (size, s))]
        found = bh_qvalues(same(cos, p, v.floor(size, cfg))) <= cfg.fdr
        mutual = v.matches[((size, s), first)][1][idx] == np.arange(idx.size)
        keep = (found & mutual) if keep is None else keep & found & mutual
        cols.append(idx)
    rows = np.flatnonzero(keep)
    return np.stack([rows] + [c[rows] for c in cols], axis=1)


def _atom(d: Dictionary, j: int, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feature j of ``d`` as (decoder column (d_in,), encoder row (d_in,), encoder bias folded onto ``bias``)."""
    t = d.tensors
    dec = t["decoder"][:, j]
    enc = t["encoder.weight"][j] if "encoder.weight" in t else dec  # tied: the encoder is D^T
    own = t.get("decoder_bias", torch.zeros_like(bias))
    return dec, enc, t["encoder.bias"][j] + enc @ (bias - own)


def build_core(dicts: dict[Key, Dictionary], v: Verdicts, size: int, cfg: AnalysisConfig, acts=None) -> Core:
    """The stable core of ``size`` from the seeds that trained it; ``acts``: held-out rows (N, d_in) for FVU and L0."""
    seeds = sorted(s for j, s in dicts if j == size)
    groups = replicated(v, size, seeds, cfg)
    first = dicts[(size, seeds[0])]
    bias = first.tensors.get("decoder_bias", torch.zeros(first.d_in)).float()
    rows = {s: decoder_rows(dicts[(size, s)]) for s in seeds}
    medoid, mean_cos, dec, enc, b_enc, firing = [], [], [], [], [], []
    for g in groups:
        atoms = np.stack([rows[s][i] for s, i in zip(seeds, g, strict=True)])  # (n_seeds, d_in) unit
        gram = atoms @ atoms.T
        m = int(np.argmax(gram.sum(axis=1)))  # the first on a tie: argmax keeps the lowest index
        medoid.append(m)
        mean_cos.append(float((gram.sum() - np.trace(gram)) / max(len(g) * (len(g) - 1), 1)))
        d = dicts[(size, seeds[m])]
        for out, x in zip((dec, enc, b_enc), _atom(d, int(g[m]), bias), strict=True):
            out.append(x)
        f = d.firing_frequency()
        firing.append(np.nan if f is None else f[g[m]])
    n, d_in = len(groups), first.d_in
    tensors = {
        "decoder": torch.stack(dec, dim=1) if n else torch.zeros(d_in, 0),
        "encoder.weight": torch.stack(enc) if n else torch.zeros(0, d_in),
        "encoder.bias": torch.stack(b_enc) if n else torch.zeros(0),
        "decoder_bias": bias,
    }
    tensors = {k: t.float().contiguous() for k, t in tensors.items()}
    metrics = held_out(tensors, first.tensors, acts) if acts is not None else {}
    known = first.firing_frequency() is not None
    medoids = np.array(medoid, dtype=np.int64)
    return Core(size, seeds, groups, medoids, tensors, np.array(firing) if known else None, np.array(mean_cos), metrics)


def relu_codes(tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(B, J) ReLU codes of rows ``x`` (B, d_in) under a dictionary's tensors."""
    enc = tensors.get("encoder.weight", tensors["decoder"].t())
    centred = x - tensors["decoder_bias"] if "decoder_bias" in tensors else x
    return torch.relu(torch.addmm(tensors["encoder.bias"], centred, enc.t()))


def _fvu_l0(tensors: dict[str, torch.Tensor], x: torch.Tensor, total: float) -> tuple[float, float]:
    codes = relu_codes(tensors, x)
    recon = codes @ tensors["decoder"].t()
    if "decoder_bias" in tensors:
        recon = recon + tensors["decoder_bias"]
    return float((recon - x).pow(2).sum()) / total, float((codes > 0).sum(dim=1).float().mean())


def held_out(core: dict[str, torch.Tensor], full: dict[str, torch.Tensor], acts) -> dict:
    """FVU and L0 of the core and of the full dictionary on the first EVAL_ROWS held-out rows, the same rows."""
    x = torch.from_numpy(np.asarray(acts[:EVAL_ROWS], dtype=np.float32))
    total = float((x - x.mean(dim=0)).pow(2).sum())
    fvu, l0 = _fvu_l0(core, x, total)
    full_fvu, full_l0 = _fvu_l0({k: t.float() for k, t in full.items()}, x, total)
    return {"fvu": fvu, "l0": l0, "full_fvu": full_fvu, "full_l0": full_l0, "rows": int(x.shape[0])}


def core_sizes(run) -> tuple[list[int], str | None]:
    """(the sizes a core is built for, why none is when none is): ReLU dictionaries of two or more seeds."""
    arch = arch_of(run.dicts) if run.dicts else None
    if arch != "relu":
        return [], f"no stable core: it is built from ReLU dictionaries (these are {arch or 'imported'})"
    sizes = sorted({j for j, _ in run.dicts if sum(1 for k in run.dicts if k[0] == j) >= 2})
    return sizes, None if sizes else "no stable core: no size was trained on two or more seeds"


def cores_of(run) -> dict[int, Core]:
    """Each size's stable core (measured once per run)."""
    v = run.measured(feature_verdicts)
    cache = activation_cache(run.dicts, run.cache_dir)
    held_out = None if cache is None else cache.val
    return {j: build_core(run.dicts, v, j, run.results.config, held_out) for j in core_sizes(run)[0]}


def core_rows(run) -> list[dict]:
    """core.csv: per size, the core beside the first seed's full dictionary."""
    out = []
    for j, core in sorted(run.measured(cores_of).items()):
        m, n = core.metrics, int(core.members.shape[0])
        out.append({"dict_size": j, "seeds": len(core.seeds), "core_features": n, "core_fraction": n / j,
                    "core_fvu": m.get("fvu"), "full_fvu": m.get("full_fvu"), "core_l0": m.get("l0"),
                    "full_l0": m.get("full_l0"), "held_out_rows": m.get("rows"),
                    "median_mean_cos": float(np.median(core.mean_cos)) if n else None})  # fmt: skip
    return out
