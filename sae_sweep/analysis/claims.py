"""Findings that are verdicts: the note's three claims decided per seed, and controls set beside the main run at
matched sizes.

Every verdict here is one stated test on one difference (inference.py), at the level of the report's intervals
(``analysis.level``, so alpha = 1 - level):

1. "The low-MCS mode matches random vectors": the permutation test of W1 between the learned values below the
   cutoff and Rand 1's (lowmode.py). Reproduced when it finds no difference (p >= alpha), which says the test
   could not tell them apart at this sample size, not that they are equal.
2. "A feature's MCS against two larger dictionaries is highly correlated": Pearson r, reproduced when the lower end
   of its Fisher interval is at least ``HIGH_CORRELATION``.
3. "The number of high-MCS features rises with size while their proportion falls": at every step between
   consecutive sizes, the score interval of the count's change lies above 0 and that of the proportion's change
   below 0.

Controls are compared with the main run's dictionary of the same size scored against the same reference size, on
the same kind of data; synthetic-data variants have their own section.
"""

from __future__ import annotations

import numpy as np

from sae_sweep.analysis.extras import Extras
from sae_sweep.analysis.inference import correlation_interval, score_difference
from sae_sweep.analysis.note import Results, correlations, counts

HIGH_CORRELATION = 0.7  # "highly correlated": the interval's lower end reaches this


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _verdict(ok: bool) -> str:
    return "reproduced" if ok else "not reproduced"


def claim_low_mode(res: Results, ex: Extras) -> str | None:
    alpha, j = 1 - res.config.level, res.featured
    rows = [r for r in ex.low_tests if r["dict_size"] == j and r["null"] == "isotropic"]
    if not rows:
        return None
    parts = [
        f"{_verdict(r['p'] >= alpha)} for seed {r['seed']} (W1 {r['emd']:.4f}, p = {r['p']:.2g}, "
        f"{r['n_learned']} learned against {r['n_null']} random values)"
        for r in rows
    ]
    return (
        f"The note's claim 1, that the low-MCS mode matches random vectors (MCS < {res.config.cutoff} at J={j} "
        f"against J={res.reference}, permutation test of W1 against Rand 1, {res.config.n_perm} relabellings, "
        f"difference when p < {alpha:g}): " + "; ".join(parts) + "."
    )


def claim_correlated(res: Results) -> str | None:
    parts = []
    for s in res.seeds:
        r = next((c for c in correlations(res, s) if c["dict_size"] == res.featured), None)
        if r is None:
            continue
        sizes = (r["x_size"], r["y_size"])
        if not np.isfinite(r["pearson"]):  # one side constant: r is undefined, and so is "highly correlated"
            parts.append(f"not reproduced for seed {s} (r undefined: one of the MCS arrays is constant)")
            continue
        lo, hi = correlation_interval(r["pearson"], len(r["x"]), res.config.level)
        parts.append(f"{_verdict(lo >= HIGH_CORRELATION)} for seed {s} (r = {r['pearson']:.3f} [{lo:.3f}, {hi:.3f}])")
    if not parts:
        return None
    return (
        f"The note's claim 2, that a feature's MCS against two larger dictionaries is highly correlated (Pearson r "
        f"of J={res.featured} against J={sizes[0]} and J={sizes[1]}, {res.config.level:.0%} Fisher interval, high "
        f"when its lower end is at least {HIGH_CORRELATION}): " + "; ".join(parts) + "."
    )


def size_steps(rows: list[dict], level: float) -> list[dict]:
    """For consecutive sizes of ``counts`` rows: the change in the high-MCS count and proportion, with intervals."""
    steps = []
    for a, b in zip(rows, rows[1:], strict=False):
        count = score_difference(b["high"], b["n"], a["high"], a["n"], level, counts=True)
        prop = score_difference(b["high"], b["n"], a["high"], a["n"], level)
        steps.append({"from": a["dict_size"], "to": b["dict_size"], "count": count, "proportion": prop})
    return steps


def _step_failures(steps: list[dict]) -> list[str]:
    out = []
    for t in steps:
        (dc, lo, hi), (dp, plo, phi) = t["count"], t["proportion"]
        if not lo > 0:
            out.append(
                f"the count does not rise detectably from J={t['from']} to J={t['to']} "
                f"({dc:+.0f} [{lo:+.0f}, {hi:+.0f}])"
            )
        if not phi < 0:
            out.append(
                f"the proportion does not fall detectably from J={t['from']} to J={t['to']} "
                f"({100 * dp:+.1f} points [{100 * plo:+.1f}, {100 * phi:+.1f}])"
            )
    return out


def claim_counts(res: Results) -> str | None:
    parts = []
    for s in res.seeds:
        rows = counts(res, s)
        if len(rows) < 2:
            continue
        failures = _step_failures(size_steps(rows, res.config.level))
        numbers = ", ".join(f"{r['high']}" for r in rows) + " (" + ", ".join(_pct(r["high_fraction"]) for r in rows)
        text = f"{_verdict(not failures)} for seed {s}: high-MCS counts {numbers})"
        parts.append(text + (": " + "; ".join(failures) if failures else ""))
    if not parts:
        return None
    sizes = ", ".join(str(r["dict_size"]) for r in counts(res, res.seeds[0]))
    return (
        f"The note's claim 3, that the number of high-MCS features rises with size while their proportion falls "
        f"(J = {sizes} against J={res.reference}; every step between consecutive sizes must show both, "
        f"{res.config.level:.0%} score intervals of the change): " + "; ".join(parts) + "."
    )


def _comparable(res: Results, row: dict) -> tuple[int, int] | None:
    """(high-MCS count, n) of the main run's dictionary at the control row's size and seed, scored against the
    control's reference size; None when the main run has no such pair."""
    hit = res.mcs.get((row["dict_size"], row["seed"], row["reference"], row["seed"]))
    if hit is None:
        return None
    v = hit[0]
    return int((v >= res.config.threshold).sum()), v.size


def _control_part(res: Results, r: dict, main_row: dict) -> str | None:
    mine = _comparable(res, r)
    if mine is None:
        return None
    d, lo, hi = score_difference(r["high"], r["n"], *mine, res.config.level)
    if lo > 0 or hi < 0:
        how = f"{'higher' if lo > 0 else 'lower'} by {100 * abs(d):.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    else:
        how = f"no difference detected ({100 * d:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}])"
    loss, main_loss = r.get("gpt_val_loss"), main_row.get("gpt_val_loss")
    other_gpt = loss and main_loss and loss != main_loss  # a control on another GPT says how good that GPT was
    gpt = f" (its GPT's validation loss {loss:.2f} against {main_loss:.2f})" if other_gpt else ""
    return (
        f"{r['variant']}{gpt}: {_pct(r['high_fraction'])} high-MCS at J={r['dict_size']} against J={r['reference']}, "
        f"the main run {_pct(mine[0] / mine[1])} at J={r['dict_size']} against J={r['reference']}: {how}"
    )


def controls(res: Results, table: list[dict]) -> str | None:
    """Each control on the main run's kind of data, against the main run at the same size and reference size."""
    j, s = res.featured, res.seeds[0]
    main_row = next((r for r in table if r["variant"] == "(note)" and r["dict_size"] == j and r["seed"] == s), None)
    if main_row is None:
        return None
    parts = []
    for v in sorted({r["variant"] for r in table if r["data"] == main_row["data"]} - {"(note)"}):
        rows = [r for r in table if r["variant"] == v and r["seed"] == s]
        if not rows:
            continue
        r = next((x for x in rows if x["dict_size"] == j), None) or max(rows, key=lambda x: x["dict_size"])
        part = _control_part(res, r, main_row)
        if part:
            parts.append(part)
    if not parts:
        return None
    return (
        f"Controls, each beside the main run's dictionary of the same size against the same reference size (seed {s}; "
        f"{res.config.level:.0%} score interval of the difference in high-MCS fraction): " + "; ".join(parts) + "."
    )


def claims(res: Results, ex: Extras) -> list[str | None]:
    """The note's three claims, in its order."""
    return [claim_low_mode(res, ex), claim_correlated(res), claim_counts(res)]
