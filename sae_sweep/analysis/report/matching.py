"""Section "Matching beyond max": Hungarian one-to-one matching beside plain max, and the features two seeds share.
matching.csv, shared_seeds.csv and their Finding."""

from __future__ import annotations

from sae_sweep.analysis.report.section import ReportInput, Section, Table, pct
from sae_sweep.analysis.report.tables import row_of


def matching(rep: ReportInput) -> str | None:
    """Hungarian beside max, read through duplicates: one-to-one matching differs from max exactly where several
    features share a best match, so the gap counts shared matches rather than testing the same features harder."""
    res, ex = rep.res, rep.ex
    r = row_of(ex.matching, dict_size=res.featured, seed=res.seeds[0])
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
            f"{pct(r['high_fraction_hungarian'])} high-MCS against {pct(r['high_fraction_max'])} for plain max "
            f"(mean cosine {r['hungarian_mean']:.3f} against {r['mmcs']:.3f}): the gap comes from shared matches."
        )
    shared = [x for x in ex.shared if x.get("shared_fraction") is not None and x["seed_a"] == res.seeds[0]]
    if shared:
        text += " Across seeds at the same size, shared fraction (Hungarian cosine >= {}) and PW-MCC: {}.".format(
            res.config.shared_cosine,
            ", ".join(f"J={x['dict_size']}: {pct(x['shared_fraction'])}, {x['pw_mcc']:.3f}" for x in shared),
        )
    return text


SECTION = Section(
    heading="Matching beyond max",
    text="Plain max (MMCS) beside Hungarian one-to-one matching against the reference, and "
    "the fraction of features shared across seeds at the same size (Hungarian cosine >= analysis.shared_cosine, as "
    "in Paulo & Belrose 2025).",
    tables=(
        Table("matching", "matching.csv", lambda rep: rep.ex.matching),
        Table("shared across seeds", "shared_seeds.csv", lambda rep: rep.ex.shared),
    ),
    findings=(matching,),
)
