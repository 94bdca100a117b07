"""Section "The stable core": per size, the features every seed found (measures/core.py), as the dictionary
products.py writes under core/, with its held-out FVU and L0 beside the full dictionary's. core.csv and a Finding."""

from __future__ import annotations

from sae_sweep.analysis.measures.core import EVAL_ROWS, core_rows, core_sizes
from sae_sweep.analysis.report.section import ReportInput, Section, Table, pct


def _rows(rep: ReportInput) -> list[dict]:
    return rep.run.measured(core_rows)


def carried(rep: ReportInput) -> str | None:
    """Per size: how many features the core keeps, and its FVU and L0 beside the full dictionary's."""
    rows = _rows(rep)
    if not rows:
        return None
    parts = []
    for r in rows:
        text = f"J={r['dict_size']}: {r['core_features']} features ({pct(r['core_fraction'])})"
        if r["core_fvu"] is not None:
            text += (
                f", FVU {r['core_fvu']:.3f} against {r['full_fvu']:.3f} for the full dictionary, L0 {r['core_l0']:.1f} "
                f"against {r['full_l0']:.1f}"
            )
        parts.append(text)
    return (
        f"The stable core (features found again, mutually, in every seed of their size; {rows[0]['seeds']} seeds), "
        f"held out: {'; '.join(parts)}."
    )


def _text(rep: ReportInput) -> str:
    sizes, why = core_sizes(rep.run)
    if not sizes:
        return f"_{why}._"
    return (
        "For each size trained on two or more seeds: the first seed's features found again (beyond the null at "
        f"FDR {rep.cfg.fdr:g} and cosine >= {rep.cfg.match_cosine:g}) and mutually in every other seed's dictionary "
        "of that size, each as its group's medoid atom with its own encoder row (its encoder bias folded onto the "
        "core's decoder bias, so its codes are its source dictionary's). Written to `core/` as `sae-core-*` "
        "artifacts, each with a SAELens folder (`core/<name>/v0/saelens`, which `SAE.load_from_disk` opens) and "
        f"`latent_scores.csv`. FVU and L0 on the first {EVAL_ROWS} held-out activations, the same rows for the core "
        "and the first seed's full dictionary."
    )


SECTION = Section(
    heading="The stable core",
    text=_text,
    tables=(Table("per size", "core.csv", _rows, optional=True),),
    findings=(carried,),
    shown=lambda rep: bool(rep.run.dicts),
)
