"""report.md's "Findings": sentences generated from the numbers, never written by hand.

Each function reads rows computed by note.py, features.py, seeds.py, baselines.py and budget.py and returns a
sentence (or None when its numbers are missing), choosing its wording by comparisons spelled out in the code: change
the numbers and the findings change.
"""

from __future__ import annotations

import numpy as np

from sae_sweep.analysis.extras import Extras
from sae_sweep.analysis.features import first_seed_rows
from sae_sweep.analysis.mixture import SCALE_BOUNDS, SHIFT_BOUNDS
from sae_sweep.analysis.note import Results, is_random

LOW_MODE_APPEARS = 0.10  # the low-MCS mode "appears" when at least this fraction of a dictionary is low-MCS


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def _row(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def bimodality(res: Results, ex: Extras) -> str | None:
    j, s = res.featured, res.seeds[0]
    r = _row(ex.split, dict_size=j, seed=s)
    if r is None:
        return None
    return (
        f"At J={j}, {_pct(r['high_fraction'])} of features have MCS >= {r['threshold']} against J={res.reference} "
        f"(95% CI {_pct(r['high_lo'])} to {_pct(r['high_hi'])}); {_pct(1 - r['high_null_fraction'])} sit below "
        f"the exact null's {res.config.null_quantile:g} quantile ({r['null_quantile']:.3f}), where random vectors land."
    )


def training_budget(ex: Extras) -> str | None:
    """Was the featured size's high-MCS fraction still moving between its last two budgets? A paired bootstrap
    interval of the change (budget.last_step) that excludes 0 says so; one that covers 0 says none was detected."""
    t = ex.budget.last_step if ex.budget is not None else None
    if t is None:
        return None
    what = f"the high-MCS fraction of J={t['dict_size']} against J={t['reference']} at the same budget"
    span = f"between {t['from_seen']:,} and {t['to_seen']:,} activations seen" + (" (final)" if t["to_final"] else "")
    change = f"{100 * t['change']:+.1f} points [{100 * t['lo']:+.1f}, {100 * t['hi']:+.1f}]"
    how = f"({t['level']:.0%} paired bootstrap interval over features), from {_pct(t['high_from'])} to "
    how += f"{_pct(t['high_to'])}."
    if t["lo"] > 0 or t["hi"] < 0:
        direction = "rising" if t["lo"] > 0 else "falling"
        return f"Along the training budget, {what} was still {direction} {span}: by {change} {how}"
    return f"Along the training budget, no change in {what} was detected {span} at this resolution: {change} {how}"


def low_mode_vs_random(res: Results, ex: Extras) -> str | None:
    """The featured size's low mode against the isotropic null and against random vectors scored on the learned
    reference (lowmode.py): each a permutation test, the words chosen by p against alpha = 1 - analysis.level."""
    j, s, alpha = res.featured, res.seeds[0], 1 - res.config.level
    tests = {r["null"]: r for r in ex.low_tests if r["dict_size"] == j and r["seed"] == s}
    iso, ref = tests.get("isotropic"), tests.get("learned_reference")
    if iso is None:
        return None
    between = [r for r in ex.emd_ci if r["dict_size"] == j and is_random(r["a"]) and is_random(r["b"])]
    text = (
        f"Below MCS {res.config.cutoff} at J={j} (seed {s}), W1 between the learned low mode and Rand 1 is "
        f"{iso['emd']:.4f} (permutation p = {iso['p']:.2g})"
    )
    if between:
        top = max(between, key=lambda r: r["emd"])
        text += f"; between random sets it reaches {top['emd']:.4f} ({top['a']} vs {top['b']})"
    if iso["p"] >= alpha:
        return text + f": no difference from the isotropic null was detected at the {alpha:g} level."
    text += f": the low mode differs from the isotropic null at the {alpha:g} level"
    if ref is None:
        return text + "."
    against = f"random vectors scored against the learned J={res.reference} reference (W1 {ref['emd']:.4f}, p = "
    if ref["p"] >= alpha:
        return text + (
            f", but no difference was detected from {against}{ref['p']:.2g}): the reference's geometry alone can "
            "produce the difference, so it does not single out the low-MCS features."
        )
    return text + f", and from {against}{ref['p']:.2g}) as well, so the reference's geometry alone does not produce it."


def liveness(res: Results, ex: Extras) -> str | None:
    r = _row(ex.liveness, dict_size=res.featured, seed=res.seeds[0])
    if r is None or not r["n_low"]:
        return None
    dead, rand = r["low_dead_fraction"], r["low_live_null_fraction"]
    rest = 1 - dead - rand
    main = max((dead, "dead"), (rand, "alive but random-looking"), (rest, "alive and above the null"))[1]
    return (
        f"Of the {r['n_low']} low-MCS features at J={res.featured}, {_pct(dead)} never fire on held-out "
        f"activations, {_pct(rand)} fire but score below the null quantile, and {_pct(rest)} fire and score above it: "
        f"most are {main}. Restricting the reference to its live features moves the high-MCS fraction from "
        f"{_pct(r['high_fraction'])} to {_pct(r['high_fraction_live_ref'])}."
    ) + _rarity(r)


def _rarity(r: dict) -> str:
    """How often the live low- and high-MCS features fire, and how far their encoders turned from their decoders."""
    lo, hi = r["median_log10_freq_low"], r["median_log10_freq_high"]
    if lo is None or hi is None:
        return ""
    ratio = 10 ** (hi - lo)
    how = f"{ratio:.0f} times less often than" if ratio >= 2 else "about as often as"
    text = f" The live low-MCS features fire {how} high-MCS ones (median frequency 10^{lo:.2f} vs 10^{hi:.2f})"
    if r["enc_dec_cos_low"] is not None and r["enc_dec_cos_high"] is not None:
        text += (
            f", and their encoder rows keep a median cosine of {r['enc_dec_cos_low']:.2f} with their decoder columns "
            f"(high-MCS: {r['enc_dec_cos_high']:.2f})"
        )
    return text + "."


def movement(res: Results, ex: Extras) -> str | None:
    r = _row(ex.movement, dict_size=res.featured, seed=res.seeds[0])
    if r is None or not r["n_low"]:
        return None
    return (
        f"{r['low_stayed']} of {r['n_low']} low-MCS features at J={res.featured} ({_pct(r['low_stayed_fraction'])}) "
        f"never left their initial direction (decoder cosine >= {res.config.stay_cosine} with it), against "
        f"{_pct(r['high_stayed_fraction'])} of high-MCS features."
    )


def _at_bound(r: dict) -> str:
    """A warning when the fitted null's shift or scale sits at the edge of its allowed range (mixture.py)."""
    shift, scale = r["mixture_null_shift"], r["mixture_null_scale"]
    edge = abs(abs(shift) - SHIFT_BOUNDS[1]) < 1e-4 or min(abs(scale - b) for b in SCALE_BOUNDS) < 1e-4
    return " (at the edge of its allowed range: too few null-like values there to pin the null's shape)" if edge else ""


def split(res: Results, ex: Extras) -> str | None:
    """The real-feature count two ways (above the exact null's quantile; the two-component fit whose null may move
    and stretch), and the fit's count under the exact null beside it: how much the count depends on the null."""
    rows = [r for r in ex.split if r["seed"] == res.seeds[0] and r["mixture_n_real"] is not None]
    if not rows:
        return None
    est = ", ".join(
        f"J={r['dict_size']}: {r['mixture_n_real']:.0f} ({r['mixture_n_real_exact_null']:.0f}, "
        f"{r['n_above_null_quantile']})"
        for r in rows
    )
    real = [r["mixture_n_real"] for r in rows]
    peak = rows[int(np.argmax(real))]["dict_size"]
    trend = (
        "keeps growing with the dictionary"
        if peak == rows[-1]["dict_size"]
        else f"peaks at J={peak} and does not grow with larger dictionaries"
    )
    featured = _row(rows, dict_size=res.featured) or rows[0]
    return (
        f"With the exact null's quantile as the split, {_pct(featured['high_null_fraction'])} of J="
        f"{featured['dict_size']} features are high-MCS (fixed {featured['threshold']}: "
        f"{_pct(featured['high_fraction'])}). Real features per dictionary from the two-component fit, whose null "
        f"component may move and stretch (in brackets: the same fit with the exact null, and the count above its "
        f"{res.config.null_quantile:g} quantile): {est}; at J={featured['dict_size']} the fitted null moved by "
        f"{featured['mixture_null_shift']:+.3f} and scaled by {featured['mixture_null_scale']:.2f}"
        f"{_at_bound(featured)}. The estimate {trend}."
    )


def matching(res: Results, ex: Extras) -> str | None:
    """Hungarian beside max, read through duplicates: one-to-one matching differs from max exactly where several
    features share a best match, so the gap counts shared matches rather than testing the same features harder."""
    r = _row(ex.matching, dict_size=res.featured, seed=res.seeds[0])
    if r is None:
        return None
    text = (
        f"At J={res.featured}, the {r['n_high']} high-MCS features have {r['high_distinct_matches']} distinct best "
        f"matches in J={r['reference']}; {r['high_sharing_match']} of them share their best match with another "
        "high-MCS feature."
    )
    if r.get("hungarian_mean") is not None:
        text += (
            f" One-to-one (Hungarian) matching, which gives each reference feature to one feature only, leaves "
            f"{_pct(r['high_fraction_hungarian'])} high-MCS against {_pct(r['high_fraction_max'])} for plain max "
            f"(mean cosine {r['hungarian_mean']:.3f} against {r['mmcs']:.3f}): the gap comes from shared matches."
        )
    shared = [x for x in ex.shared if x.get("shared_fraction") is not None and x["seed_a"] == res.seeds[0]]
    if shared:
        text += " Across seeds at the same size, shared fraction (Hungarian cosine >= {}) and PW-MCC: {}.".format(
            res.config.shared_cosine,
            ", ".join(f"J={x['dict_size']}: {_pct(x['shared_fraction'])}, {x['pw_mcc']:.3f}" for x in shared),
        )
    return text


def anisotropy(res: Results, ex: Extras) -> str | None:
    r = _row(ex.anisotropic, dict_size=res.featured) or (ex.anisotropic[0] if ex.anisotropic else None)
    if r is None:
        return None
    nulls = ("isotropic", "gaussian_cov", "gaussian_moment", "activation_rows")
    closest = min(nulls, key=lambda n: r[f"emd_full_{n}"])
    return (
        f"Against anisotropic nulls at J={r['dict_size']}: random N(0, S) dictionaries reach MCS >= "
        f"{res.config.threshold} for {_pct(r['gaussian_cov_high_fraction'])} of features (S centred; with the "
        f"uncentred E[x x^T], which keeps the mean a bias-free decoder must span: "
        f"{_pct(r['gaussian_moment_high_fraction'])}) and dictionaries of "
        f"activation rows for {_pct(r['activation_rows_high_fraction'])} (isotropic: "
        f"{_pct(r['isotropic_high_fraction'])}). The learned MCS distribution is closest (full-range EMD) to the "
        f"{closest.replace('_', ' ')} null ({r[f'emd_full_{closest}']:.4f})."
    )


def _where_low(rows: list[dict], key: str, n_true: int) -> str:
    """The sizes at which the low-MCS mode holds >= LOW_MODE_APPEARS of a dictionary, in multiples of the true
    count: a description of where it is seen, with no claim about why."""
    seen = [r["dict_size"] for r in rows if r[key] is not None and r[key] >= LOW_MODE_APPEARS]
    if not seen:
        return f"holds under {_pct(LOW_MODE_APPEARS)} of every dictionary"
    sizes = ", ".join(f"J={j} ({j / n_true:g}x the true count)" for j in seen)
    return f"holds {_pct(LOW_MODE_APPEARS)} or more of the dictionary at {sizes}"


def ground_truth(ex: Extras) -> str | None:
    """Recovery of the true features and where the low-MCS mode is seen, by size: descriptions side by side."""
    if not ex.ground_truth:
        return None
    rows = first_seed_rows(ex.ground_truth)
    n_true, cos = rows[0]["n_true"], rows[0]["cosine"]
    recovered = ", ".join(f"J={r['dict_size']}: {_pct(r['recovered_fraction'])}" for r in rows)
    truth = ", ".join(f"J={r['dict_size']}: {_pct(r['low_vs_truth_fraction'])}" for r in rows)
    text = (
        f"Synthetic data with {n_true} true features. True features recovered at MCS > {cos}: {recovered}. "
        f"Scored against the true features, the low-MCS mode {_where_low(rows, 'low_vs_truth_fraction', n_true)} "
        f"(dictionary features below {rows[0]['threshold']}: {truth})"
    )
    low = [r for r in rows if r["low_fraction"] is not None]
    if low:
        where = _where_low(low, "low_fraction", n_true)
        text += f"; scored against the largest dictionary, as the note does, it {where}"
    return text + "."


def training(res: Results) -> str | None:
    """Which dictionaries met their stopping rule: the numbers of the others describe dictionaries still learning."""
    if not res.training:
        return None
    done = [r for r in res.training if r["converged"]]
    not_done = [r for r in res.training if not r["converged"]]
    name = lambda r: f"J={r['dict_size']} s{r['seed']}"  # noqa: E731
    if not not_done:
        return f"All {len(done)} dictionaries met their stopping rule (held-out loss and decoder drift settled)."
    seen = ", ".join(f"{name(r)} ({r['activations_seen'] / 1e6:.2g}M)" for r in not_done)
    return (
        f"{len(done)} of {len(res.training)} dictionaries met their stopping rule; {len(not_done)} did not converge "
        f"within their cap ({seen} activations seen): their numbers below describe dictionaries that were still "
        "learning, and are marked * in the figures and `converged = False` in the tables."
    )


def findings(res: Results, ex: Extras, control_table: list[dict] | None = None) -> list[str]:
    """Every finding whose numbers exist, in reading order."""
    from sae_sweep.analysis.claims import claims, controls  # noqa: PLC0415 (claims imports Extras from extras.py)

    out = [
        training(res),
        *claims(res, ex),
        bimodality(res, ex),
        training_budget(ex),
        low_mode_vs_random(res, ex),
        liveness(res, ex),
        movement(res, ex),
        split(res, ex),
        matching(res, ex),
        anisotropy(res, ex),
        controls(res, control_table or []),
        ground_truth(ex),
    ]
    return [f for f in out if f]
