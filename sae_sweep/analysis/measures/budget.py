"""The training budget: one run's measures as functions of how long its dictionaries trained.

One job: turn the budget axis the SAE stage records (``Dictionary.snapshots()``: the decoder at each doubling of
the activations seen, then the final state) into rows (report/budget.py writes them). For each seed and each
size J below the reference, at every budget point of J: the high-MCS fraction against the reference at the same
budget (its snapshot or final state with the same activations seen; a budget the reference lacks is skipped) and
against the reference's final state, the low mode's EMD to the exact null, and the dead and never-moved fractions.
On synthetic data, the true features recovered at every budget. For the Findings, a paired bootstrap of the featured
size's high-MCS fraction between its last two budgets. Nothing at all when no dictionary has snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sae_sweep.analysis.measures.features import Key, decoder_rows, fraction
from sae_sweep.analysis.measures.ground_truth import recovered_fraction
from sae_sweep.analysis.measures.mcs import max_cosine_similarity, rowwise_cosine
from sae_sweep.analysis.measures.nulls import sample_analytic_null
from sae_sweep.analysis.measures.pairwise import Results
from sae_sweep.analysis.measures.stats import bootstrap_ci, emd
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary

SAME, FINAL = "same budget", "final"  # reference_state: the reference at the same activations seen, or its final


@dataclass(frozen=True)
class State:
    """One point of a dictionary's budget axis."""

    activations_seen: int
    steps: int
    final: bool
    rows: np.ndarray  # (J, d_in): the decoder then, features as rows
    fired: np.ndarray  # (J,) int64: held-out rows each feature fired on (0: dead)
    dead_on: str  # which rows ``fired`` counts: "eval sample" (a snapshot's) or "held-out" (all of them)
    dead_rows: int  # how many rows that is


@dataclass
class Budget:
    """One run's budget axis: the rows of budget.csv and budget_recovery.csv, and the MCS behind them."""

    variant: str
    rows: list[dict] = field(default_factory=list)
    recovery: list[dict] = field(default_factory=list)
    mcs: dict[tuple[int, int, int, str], np.ndarray] = field(default_factory=dict)  # (J, seed, seen, state) -> (J,)
    last_step: dict | None = None  # the featured size's last two budgets against the reference at the same budget


def has_budget(d: Dictionary) -> bool:
    return bool(d.config.training.get("snapshots"))


def states(d: Dictionary) -> list[State]:
    """Every snapshot of ``d``, oldest first, ending with its final state. Training records the final state as a
    snapshot too (firing counted on the same evaluation sample as the others); a dictionary whose snapshots stop
    before its end gets its final state from the dictionary itself, firing counted on every held-out row."""
    n_val = d.config.n_val_tokens
    eval_rows = min(int(d.config.sae.get("eval_rows", n_val)), n_val)  # the stage evaluates the first eval_rows
    out = [
        State(
            s.activations_seen,
            s.steps,
            s.steps == d.config.steps,
            s.decoder.T.numpy(),
            np.asarray(s.fired),
            "eval sample",
            eval_rows,
        )
        for s in d.snapshots()
    ]
    if out and out[-1].final:
        return out
    seen = int(d.config.training["activations_seen"])
    return [*out, State(seen, d.config.steps, True, decoder_rows(d), np.asarray(d.firing_counts), "held-out", n_val)]


def _null_low(j: int, res: Results, cfg: AnalysisConfig) -> np.ndarray:
    """One seeded draw of j values from the exact null (K = d_in, M = the reference's size), below the cutoff: the
    same draw at every budget, so the EMD moves with the learned values only."""
    seed = int(np.random.SeedSequence([cfg.seed, 19, j]).generate_state(1)[0])
    v = sample_analytic_null(j, res.d_in, res.reference, seed)  # (j,)
    return v[v < cfg.cutoff]


def _point(st: State, init: np.ndarray, cfg: AnalysisConfig) -> dict:
    """The columns of one budget point that do not depend on the reference: dead and never-moved fractions."""
    return {
        "dead_fraction": fraction(st.fired == 0),
        "dead_on": st.dead_on,
        "dead_rows": st.dead_rows,
        "never_moved": fraction(rowwise_cosine(st.rows, init) >= cfg.stay_cosine),
    }


def dictionary_rows(
    budget: Budget, d: Dictionary, own: list[State], ref_states: list[State], res: Results, key: Key
) -> list[dict]:
    """Every budget point of ``d`` (its ``states``, ``own``) against the reference (``ref_states``) at the same budget
    and at its final state; fills budget.mcs."""
    cfg, (j, s) = res.config, key
    null_low = _null_low(j, res, cfg)  # (n_low_null,)
    init = d.tensors["decoder_init"].T.numpy()  # (J, d_in)
    by_seen = {r.activations_seen: r for r in ref_states}
    rows, cache = [], {}  # cache: (own seen, reference seen) -> MCS (J,), when "same budget" is the final state
    for st in own:
        point = _point(st, init, cfg)
        for name, r in ((SAME, by_seen.get(st.activations_seen)), (FINAL, ref_states[-1])):
            if r is None:
                continue  # the reference has no state at this budget
            if (st.activations_seen, r.activations_seen) not in cache:
                v = max_cosine_similarity(st.rows, r.rows, chunk_size=cfg.chunk_size, device=cfg.device)[0]
                cache[(st.activations_seen, r.activations_seen)] = v
            v = cache[(st.activations_seen, r.activations_seen)]  # (J,)
            budget.mcs[(j, s, st.activations_seen, name)] = v
            low = v[v < cfg.cutoff]
            rows.append(
                {
                    "variant": budget.variant or "(note)",
                    "dict_size": j,
                    "seed": s,
                    "activations_seen": st.activations_seen,
                    "steps": st.steps,
                    "final": st.final,
                    "reference_state": name,
                    "reference_activations_seen": r.activations_seen,
                    "n": v.size,
                    "high_fraction": fraction(v >= cfg.threshold),
                    "n_low": int(low.size),
                    "low_emd_null": emd(low, null_low) if low.size and null_low.size else None,
                    **point,
                    "converged": d.config.converged if st.final else None,
                }
            )
    return rows


def recovery_rows(
    variant: str, dicts: dict[Key, Dictionary], axis: dict[Key, list[State]], true: np.ndarray, cfg: AnalysisConfig
) -> list[dict]:
    """Synthetic data: the fraction of true features (n_true, d_in) recovered at every budget point (``axis``: the
    ``states`` of every dictionary with snapshots) of every size."""
    rows = []
    for (j, s), own in sorted(axis.items()):
        d = dicts[(j, s)]
        for st in own:
            rows.append(
                {
                    "variant": variant or "(note)",
                    "dict_size": j,
                    "seed": s,
                    "activations_seen": st.activations_seen,
                    "steps": st.steps,
                    "final": st.final,
                    "n_true": true.shape[0],
                    "cosine": cfg.recovered_cosine,
                    "recovered_fraction": recovered_fraction(true, st.rows, cfg),
                    "converged": d.config.converged if st.final else None,
                }
            )
    return rows


def last_step(budget: Budget, res: Results) -> dict | None:
    """The featured size's (first seed's) high-MCS fraction at its last two budgets against the reference at the
    same budget, and a paired bootstrap interval of the change (features resampled, the same ones at both)."""
    cfg, j, s = res.config, res.featured, res.seeds[0]
    seen = sorted(k[2] for k in budget.mcs if k[:2] == (j, s) and k[3] == SAME)
    if len(seen) < 2:
        return None
    a, b = seen[-2:]
    high = np.stack([budget.mcs[(j, s, a, SAME)], budget.mcs[(j, s, b, SAME)]], axis=1) >= cfg.threshold  # (J, 2)
    high = high.astype(np.float64)
    change = lambda x: float(x[:, 1].mean() - x[:, 0].mean())  # noqa: E731 - resampled rows keep both budgets
    lo, hi = bootstrap_ci(high, change, cfg.n_boot, cfg.level, seed=cfg.seed)
    return {
        "dict_size": j,
        "seed": s,
        "reference": res.reference,
        "from_seen": a,
        "to_seen": b,
        "to_final": b == max(k[2] for k in budget.mcs if k[:2] == (j, s)),  # every state has a FINAL row: the last
        "high_from": float(high[:, 0].mean()),
        "high_to": float(high[:, 1].mean()),
        "change": change(high),
        "lo": lo,
        "hi": hi,
        "level": cfg.level,
    }


def compute_budget(
    res: Results, dicts: dict[Key, Dictionary], variant: str = "", true: np.ndarray | None = None
) -> Budget | None:
    """The budget axis of one run's dictionaries; None when none of them has snapshots."""
    if not any(has_budget(d) for d in dicts.values()):
        return None
    budget = Budget(variant)
    axis = {key: states(d) for key, d in dicts.items() if has_budget(d)}  # each snapshots file read once
    for s in res.seeds:
        keys = [(j, s) for j in res.sizes if j < res.reference and (j, s) in axis]
        ref_key = (res.reference, s)
        ref_states = (axis.get(ref_key) or states(dicts[ref_key])) if keys and ref_key in dicts else []
        for key in keys if ref_states else []:
            budget.rows += dictionary_rows(budget, dicts[key], axis[key], ref_states, res, key)
    if true is not None:
        budget.recovery = recovery_rows(variant, dicts, axis, true, res.config)
    budget.last_step = last_step(budget, res)
    return budget
