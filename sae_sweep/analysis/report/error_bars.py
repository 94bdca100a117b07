"""Section "Error bars": bootstrap intervals of every EMD, the low mode against two nulls (permutation tests), and
the seed-to-seed spread of every per-seed metric. Three tables and the low mode's Finding."""

from __future__ import annotations

from sae_sweep.analysis.measures.pairwise import is_random
from sae_sweep.analysis.report.section import ReportInput, Section, Table


def low_mode_vs_random(rep: ReportInput) -> str | None:
    """The featured size's low mode against the isotropic null and against random vectors scored on the learned
    reference (low_mode.py): each a permutation test, the words chosen by p against alpha = 1 - analysis.level."""
    res, ex = rep.res, rep.ex
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


SECTION = Section(
    heading="Error bars",
    text="Bootstrap intervals (features resampled) for every EMD; permutation tests of each low mode against the "
    "isotropic null (Rand 1) and against random vectors scored on the learned reference (`low_mode_tests.csv`: "
    "W1 and p); and the seed-to-seed spread of every per-seed metric (range from two seeds, sd from three).",
    tables=(
        Table("EMD intervals", "emd_ci.csv", lambda rep: rep.ex.emd_ci),
        Table("low mode against two nulls", "low_mode_tests.csv", lambda rep: rep.ex.low_tests),
        Table("seed spread", "seed_spread.csv", lambda rep: rep.ex.spread),
    ),
    findings=(low_mode_vs_random,),
)
