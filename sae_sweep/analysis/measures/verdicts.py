"""Which features are real, one by one: every feature of every dictionary of a variant, tested against the others.

For a feature a of dictionary A and another dictionary R of the same variant (same data): its best match in R (cosine c
and index) and a p-value for "a is found again in R": P(MCS >= c) for a direction unrelated to R. What an unrelated
direction looks like is not known (a dead feature that never moved is an isotropic random one; a learned one lies where
the data does), so by default the p-value is the largest over a set of nulls, each with its queries:

* ``isotropic``: random N(0, I) directions;
* ``reference``: Gaussian directions with the second moment of R's own atoms, the geometry R was learned in;
* ``moment`` (where the activation cache is known): Gaussian directions with the activations' second moment E[x x^T],
  the data's geometry (random N(0, S) dictionaries reach MCS >= 0.5 for every feature here, where the isotropic null
  would call them found).

A feature counts as found again in R when its match there is beyond the null and at least a cosine floor close:
significance says "not chance", the cosine says "the same direction" (on synthetic data, features of larger
dictionaries replicate beyond the null at cosines of 0.4-0.6 by sharing some true features, without being one). The
floor of each size is calibrated on a parametric bootstrap of the data analysed where the variant has a calibration
(calibration.py, ``analysis.calibrate``), else it is ``analysis.match_cosine`` (0.95).

A match is beyond the null only if it beats every null: under
whichever is the right null its p-value is valid, so the largest is too. For each, the MCS of ``analysis.null_rows``
queries against R, below a high threshold, give the p-value themselves, and above it a tail of the exact null's family
fitted to them (null_tail.py) reaches far below 1 / null_rows; the ``null`` column names the null that set a feature's
p. ``analysis.verdict_null`` keeps one null alone, or takes ``rows``: unit activation rows as queries, their sample's
own p-values (floored at 1 / (null_rows + 1)). Random activation rows match each other far more closely than learned
features match across seeds (on the demo's activations, 256 random rows against 256 others: median MCS 0.91, 10% above
0.99; the demo's J=256 seeds against each other: median 0.82, 4% above 0.99), because repeated contexts repeat rows; a
null calibrated for such rows is far stricter than "found again beyond random directions with the data's geometry", and
calls few learned features real.

Independent references are the other seeds (at A's size, else the nearest one): other sizes of A's own seed share its
data order and are not independent. The p-value of "found in at least r of the n other seeds" is Benjamini & Heller's
partial conjunction (r = ``analysis.min_replications``); Benjamini-Hochberg over A's features gives its q-value. A
feature's verdict, first rule that holds:

    dead           it never fired on the held-out activations (firing known)
    no_reference   fewer other seeds than r: nothing independent to be found again in, so nothing is claimed
    real           q <= analysis.fdr
    unreplicated   otherwise

``replications`` counts the other seeds whose own BH (over A's features, against that seed's reference) has q <= fdr at
a close enough match; ``stability`` is the share of every other-seed dictionary, every size, in which it does: a score
in [0, 1] to sort and filter by, not a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sae_sweep.activations import Activations, cache_folder, open_activations
from sae_sweep.analysis.measures.features import Key, decoder_rows
from sae_sweep.analysis.measures.inference import bh_qvalues, partial_conjunction
from sae_sweep.analysis.measures.mcs import max_cosine_similarity, mutual_max_cosine
from sae_sweep.analysis.measures.null_tail import Tail, empirical_tail, fit_tail
from sae_sweep.analysis.measures.nulls import activation_dictionary, gaussian_dictionary, random_dictionary
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary
from sae_sweep.errors import DataError

VERDICTS = ("real", "unreplicated", "dead", "no_reference")
NULLS = ("isotropic", "reference", "moment", "rows")


@dataclass
class Verdicts:
    """One variant's per-feature answer: a row per (dictionary, feature) and what the rows rest on."""

    variant: str
    nulls: list[str]  # the nulls whose largest p-value counts (NULLS)
    why: str  # and why, in a sentence
    table: np.ndarray | None = None  # one row per (dictionary, feature), columns COLUMNS
    tails: dict[Key, dict[str, Tail]] = field(default_factory=dict)  # each reference's fitted nulls
    floors: dict[int, float] = field(default_factory=dict)  # dict size -> its calibrated match floor (calibration.py);
    #                                                          a size without one: analysis.match_cosine
    # (feature's dictionary, reference) -> cosine (J,), index (J,), p (J,) and the null that gave it (J,) (an index
    # into ``nulls``) of every feature's best match there
    matches: dict[tuple[Key, Key], tuple[np.ndarray, ...]] = field(default_factory=dict)

    def floor(self, dict_size: int, cfg: AnalysisConfig) -> float:
        """The match floor of a size-``dict_size`` dictionary's features: calibrated, else analysis.match_cosine."""
        return self.floors.get(dict_size, cfg.match_cosine)


def null_kinds(cfg: AnalysisConfig, acts) -> tuple[list[str], str]:
    """(the nulls whose largest p-value counts, why): ``auto`` takes the isotropic and reference nulls, and the
    data's moment where the activation cache is here."""
    if cfg.verdict_null != "auto":
        if cfg.verdict_null in ("moment", "rows") and acts is None:
            raise DataError(
                f"analysis.verdict_null={cfg.verdict_null} needs the activation cache these dictionaries were trained "
                "on, and it is not under paths.cache: set analysis.verdict_null=auto (or reference), or analyse where "
                "the cache is"
            )
        return [cfg.verdict_null], f"analysis.verdict_null={cfg.verdict_null}"
    if acts is None:
        return ["isotropic", "reference"], "the largest p of the isotropic and reference nulls (no activation cache)"
    return ["isotropic", "reference", "moment"], "the largest p of the isotropic, reference and data-moment nulls"


def activation_cache(dicts: dict[Key, Dictionary], cache_dir: Path | None) -> Activations | None:
    """The first activation cache these dictionaries name that is on disk, or None."""
    for key in sorted({k for d in dicts.values() if (k := d.config.activations.get("key"))}):
        path = cache_folder(cache_dir, key) if cache_dir is not None else None
        if path is not None and path.exists():  # a folder without its meta.json is damaged: named, not skipped
            return open_activations(path)
    return None


def activations_of(dicts: dict[Key, Dictionary], cache_dir: Path | None):
    """The training rows (N, d_in) of ``activation_cache``, or None."""
    cache = activation_cache(dicts, cache_dir)
    return None if cache is None else cache.train


@dataclass(frozen=True)
class Atoms:
    """What the verdicts read of one dictionary (or of one of its snapshots)."""

    name: str
    rows: np.ndarray  # (J, d_in) its atoms, features as rows
    firing: np.ndarray | None  # (J,) held-out firing frequency; None when unknown
    mcs_reference: np.ndarray | None = None  # (J,) the note's MCS against its seed's largest size


def atoms_of(run) -> dict[Key, Atoms]:
    """An analysed variant's dictionaries as ``Atoms``."""
    return {
        k: Atoms(d.name, decoder_rows(d), d.firing_frequency(), run.results.vs_reference(*k))
        for k, d in sorted(run.dicts.items())
    }


def data_moment(acts, seed: int, rows: int = 65_536) -> np.ndarray:
    """E[x x^T] (d_in, d_in) of ``rows`` activation rows drawn at random (all of them when there are fewer): the
    moment null's covariance, which needs the data's shape, not every row's digits."""
    pick = np.arange(acts.shape[0])
    if acts.shape[0] > rows:
        pick = np.sort(np.random.default_rng([seed, 29]).choice(acts.shape[0], rows, replace=False))
    x = np.asarray(acts[pick], dtype=np.float64)  # (rows, d_in)
    return x.T @ x / len(x)


def _queries(kind: str, ref: np.ndarray, acts, moment, cfg: AnalysisConfig, seed: int) -> np.ndarray:
    """(null_rows, d_in) null directions of ``kind`` for the reference atoms ``ref`` (M, d_in)."""
    if kind == "isotropic":
        return random_dictionary(cfg.null_rows, ref.shape[1], seed)
    if kind == "rows":
        return activation_dictionary(acts, cfg.null_rows, seed)
    cov = moment if kind == "moment" else ref.T.astype(np.float64) @ ref / ref.shape[0]  # (d_in, d_in)
    return gaussian_dictionary(cfg.null_rows, cov, seed)


def _tail(kind: str, ref: np.ndarray, acts, moment, cfg: AnalysisConfig, seed: int) -> Tail:
    """The null ``kind`` for reference atoms ``ref``: the MCS of its queries against them, with a fitted tail (an
    activation-row sample alone: its point masses near 1 follow no smooth tail)."""
    v = max_cosine_similarity(_queries(kind, ref, acts, moment, cfg, seed), ref, chunk_size=cfg.chunk_size,
                              device=cfg.device)[0]  # fmt: skip
    if kind == "rows":
        return empirical_tail(v)
    return fit_tail(np.clip(v, -1 + 1e-7, 1 - 1e-7))


def _p(tails: dict[str, Tail], cos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the largest p over the nulls (J,), the index in ``tails`` of the null that gave it (J,))."""
    ps = np.stack([t.p(cos) for t in tails.values()])  # (n_nulls, J)
    return ps.max(axis=0), ps.argmax(axis=0)


def independent(key: Key, keys: list[Key]) -> list[Key]:
    """The references for ``key``'s features to be found again in: per other seed, its dictionary of ``key``'s size,
    else its nearest size (in log2), the smaller on a tie."""
    j, s = key
    out = []
    for other in sorted({k[1] for k in keys} - {s}):
        sizes = [k[0] for k in keys if k[1] == other]
        out.append((min(sizes, key=lambda m: (abs(np.log2(m / j)), m)), other))
    return out


def feature_verdicts(run, progress=None) -> Verdicts:
    """The per-feature verdicts of one analysed variant (``AnalysedRun``: its dictionaries, results, config and
    activation caches), at the match floors of its calibration where it has one (``run.floors``)."""
    cfg: AnalysisConfig = run.results.config
    acts = activations_of(run.dicts, run.cache_dir) if cfg.verdict_null in ("auto", "moment", "rows") else None
    return verdicts(atoms_of(run), cfg, acts, run.variant, progress, floors=run.floors)


def verdicts(
    atoms: dict[Key, Atoms], cfg: AnalysisConfig, acts=None, variant: str = "", progress=None, floors=None
) -> Verdicts:
    """The verdicts of every feature of ``atoms`` against the others; ``acts`` (N, d_in): the activation rows the
    data's nulls read (None: the isotropic and reference nulls alone); ``floors``: dict size -> match floor (else
    analysis.match_cosine)."""
    track = progress or (lambda it, total, description: it)
    keys = sorted(atoms)
    kinds, why = null_kinds(cfg, acts)
    out = Verdicts(variant, kinds, why, floors=dict(floors or {}))
    moment = data_moment(acts, cfg.seed) if "moment" in kinds else None
    for i, k in enumerate(track(keys, len(keys), "feature nulls")):
        seeds = np.random.SeedSequence([cfg.seed, 29, i]).generate_state(len(kinds))
        out.tails[k] = {
            kind: _tail(kind, atoms[k].rows, acts, moment, cfg, int(x)) for kind, x in zip(kinds, seeds, strict=True)
        }
    pairs = [(a, r) for i, a in enumerate(keys) for r in keys[i + 1 :]]  # each unordered pair once: both ways
    for a, r in track(pairs, len(pairs), "feature matches"):
        ways = mutual_max_cosine(atoms[a].rows, atoms[r].rows, chunk_size=cfg.chunk_size, device=cfg.device)
        for (x, y), (cos, idx) in zip(((a, r), (r, a)), ways, strict=True):
            p, which = _p(out.tails[y], cos)
            out.matches[(x, y)] = (cos, idx, p, which)
    out.table = np.concatenate([dictionary_table(atoms, a, out, cfg) for a in keys]) if keys else None
    return out


def same(cos: np.ndarray, p: np.ndarray, floor: float) -> np.ndarray:
    """The p-values of "found again" with a match below the match floor (``Verdicts.floor``) set to 1: a match counts
    only where it is both beyond the null and close enough to be the same direction."""
    return np.where(cos >= floor, p, 1.0)


def _bh_hits(p: np.ndarray, fdr: float) -> np.ndarray:
    return bh_qvalues(p) <= fdr


def decide(firing: np.ndarray | None, p_refs: np.ndarray, p_all_other_seeds: np.ndarray, cfg: AnalysisConfig) -> dict:
    """The verdict columns of one dictionary's features from their p-values: ``p_refs`` (J, n) against its n
    independent references, ``p_all_other_seeds`` (J, m) against every dictionary of another seed."""
    J, n = p_refs.shape
    r = cfg.min_replications
    if n >= r:
        q = bh_qvalues(partial_conjunction(p_refs, r))
        p_pc = partial_conjunction(p_refs, r)
    else:
        q = p_pc = np.full(J, np.nan)
    reps = sum((_bh_hits(p_refs[:, i], cfg.fdr) for i in range(n)), np.zeros(J, dtype=np.int64))
    m = p_all_other_seeds.shape[1]
    hits = sum((_bh_hits(p_all_other_seeds[:, i], cfg.fdr) for i in range(m)), np.zeros(J))
    stability = hits / m if m else np.full(J, np.nan)
    verdict = np.where(q <= cfg.fdr, "real", "unreplicated") if n >= r else np.full(J, "no_reference")
    if firing is not None:
        verdict = np.where(firing == 0, "dead", verdict)
    return {"p": p_pc, "q": q, "replications": reps, "references": n, "stability": stability, "verdict": verdict}


COLUMNS = (  # the per-feature table's columns: name, dtype (NaN / -1 / "" where a value does not apply)
    ("variant", "U64"),
    ("name", "U64"),
    ("dict_size", "i8"),
    ("seed", "i8"),
    ("feature", "i8"),
    ("firing_frequency", "f8"),  # held-out; NaN when not recorded (an imported SAE without sparsity)
    ("mcs_reference", "f8"),  # the note's MCS against the largest size of its own seed; NaN for that size
    ("match_in", "U64"),  # its first independent reference (another seed, the same size where there is one)
    ("match_cos", "f8"),
    ("match_index", "i8"),
    ("best_in", "U64"),  # the dictionary, of every other one, where its best match is
    ("best_cos", "f8"),
    ("p", "f8"),  # of "found again in at least min_replications other seeds"
    ("null", "U16"),  # the null that set p against its first independent reference
    ("q", "f8"),  # BH over its dictionary's features
    ("replications", "i8"),
    ("references", "i8"),  # other seeds: its independent references
    ("stability", "f8"),
    ("verdict", "U16"),
)


def dictionary_table(atoms: dict[Key, Atoms], a: Key, v: Verdicts, cfg: AnalysisConfig) -> np.ndarray:
    """The table's rows (a structured array, COLUMNS) for the features of dictionary ``a``."""
    keys = sorted(atoms)
    me = atoms[a]
    J = me.rows.shape[0]
    refs, others = independent(a, keys), [k for k in keys if k[1] != a[1]]
    stack = lambda ks, i: np.stack([v.matches[(a, r)][i] for r in ks], axis=1) if ks else np.zeros((J, 0))  # noqa: E731
    floor = v.floor(a[0], cfg)
    cols = decide(
        me.firing, same(stack(refs, 0), stack(refs, 2), floor), same(stack(others, 0), stack(others, 2), floor), cfg
    )
    t = np.zeros(J, dtype=list(COLUMNS))
    t["variant"], t["name"], t["dict_size"], t["seed"], t["feature"] = v.variant or "(note)", me.name, *a, np.arange(J)
    t["firing_frequency"] = np.nan if me.firing is None else me.firing
    t["mcs_reference"] = np.nan if me.mcs_reference is None else me.mcs_reference
    t["match_index"] = -1
    t["match_cos"] = np.nan
    if refs:
        t["match_in"] = atoms[refs[0]].name
        cos, idx, _, which = v.matches[(a, refs[0])]
        t["match_cos"], t["match_index"], t["null"] = cos, idx, np.array(v.nulls)[which]
    rest = [k for k in keys if k != a]
    t["best_cos"] = np.nan
    if rest:
        cos = stack(rest, 0)  # (J, n_rest)
        t["best_cos"], t["best_in"] = cos.max(axis=1), np.array([atoms[k].name for k in rest])[cos.argmax(axis=1)]
    for name in ("p", "q", "replications", "references", "stability", "verdict"):
        t[name] = cols[name]
    return t
