"""Asking about one dictionary or one feature, without the whole report.

    python analyze.py analysis.only=sae-L2-J1024-s0        # its verdict counts and its most stable real features
    python analyze.py analysis.only=sae-L2-J1024-s0:17     # feature 17: its verdict and its match in every dictionary

and from Python, every feature of a variant as a table (a numpy structured array; ``pandas.DataFrame(table)`` makes
it a DataFrame where pandas is installed)::

    from sae_sweep.analysis.question import feature_table
    table = feature_table("sae_sweep_out/store", "sae-L2-J1024-s0")
    table[(table["name"] == "sae-L2-J1024-s0") & (table["verdict"] == "real")]

The verdicts of one dictionary are made against every other dictionary of its variant (its references), so the
whole variant is collected and tested; only the printing is about the one asked. The report's other measures are
not computed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from sae_sweep.analysis.collect import Collection, collect_local_variants, main_variant
from sae_sweep.analysis.measures.calibration import attach
from sae_sweep.analysis.measures.pairwise import compute
from sae_sweep.analysis.measures.variant import AnalysedRun, VariantMeasures
from sae_sweep.analysis.measures.verdicts import VERDICTS, Verdicts, feature_verdicts
from sae_sweep.analysis.partial import check_one_source, keep_comparable
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.errors import ConfigError

# Any name a dictionary can have (imported SAEs' folders may hold spaces or "+"), then an optional ":<feature>"
_ONLY = re.compile(r"^(?P<name>\S(?:.*\S)?)(?::(?P<feature>\d+))$|^(?P<whole>\S(?:.*\S)?)$")


def parse_only(only: str) -> tuple[str, int | None]:
    """``name`` or ``name:index`` -> (name, index or None); ConfigError for anything else."""
    m = _ONLY.match(only) if isinstance(only, str) else None
    if m is None:
        raise ConfigError(
            f"analysis.only={only!r}: give a dictionary's name (sae-L2-J1024-s0) or a feature (sae-L2-J1024-s0:17)"
        )
    if m["whole"] is not None:
        return m["whole"], None
    return m["name"], int(m["feature"])


def variant_of(found: Collection, name: str, asked_as: str = "analysis.only") -> str:
    """The variant whose dictionaries include ``name``; ConfigError naming some of the names there are (``asked_as``:
    how the caller gave the name, a command-line key or a Python argument)."""
    for variant, dicts in found.items():
        if any(d.name == name for d in dicts.values()):
            return variant
    names = sorted(d.name for dicts in found.values() for d in dicts.values())
    shown = ", ".join(names[:6]) + (f" ... ({len(names)} in all)" if len(names) > 6 else "")
    raise ConfigError(f"{asked_as}: no dictionary named {name!r} here; there are {shown or 'none'}")


def verdicts_of(
    found: Collection, variant: str, cfg: AnalysisConfig, cache_dir: Path | None, asked: str | None = None
) -> Verdicts:
    """The per-feature verdicts of one variant, with nothing else of the analysis computed: of the dictionaries the
    report compares (``partial.keep_comparable``), so the numbers are features.csv's; ConfigError when the dictionary
    ``asked`` is one the report leaves out, saying why."""
    kept, notes = keep_comparable({variant: found[variant]}, cfg.reference)
    if asked is not None and not any(d.name == asked for d in kept[variant].values()):
        why = next((line for line in notes.get(variant, []) if line.startswith(f"{asked} ")), f"{asked} is left out")
        raise ConfigError(f"{why}; the report (features.csv) has no rows for it either")
    dicts = kept[variant]
    res = compute(dicts, cfg)  # the note's pairs: MCS against the reference (and those pairs the verdicts reuse)
    run = AnalysedRun(variant, res, VariantMeasures(variant, {}), dicts, cache_dir)
    attach(run)  # the floors of a calibration kept for these dictionaries, if any
    return feature_verdicts(run)


def feature_table(
    store: str | Path, name: str | None = None, cfg: AnalysisConfig | None = None, cache_dir: str | Path | None = None
) -> np.ndarray:
    """Every feature, with its verdict, of the variant holding dictionary ``name`` (None: the main variant) in
    ``store``; ``cache_dir``: where the activation caches are (paths.root/cache; None: the store's sibling)."""
    cfg = cfg or AnalysisConfig()
    found = collect_local_variants(store, cfg.layer)
    check_one_source(found)
    asked_as = f"feature_table(name={name!r})"
    variant = main_variant(found, cfg.variant, str(store)) if name is None else variant_of(found, name, asked_as)
    cache = Path(cache_dir) if cache_dir is not None else Path(store).parent / "cache"
    return verdicts_of(found, variant, cfg, cache, asked=name).table


def answer(v: Verdicts, only: str, out=sys.stdout) -> None:
    """Print the rows ``analysis.only`` asks for."""
    name, feature = parse_only(only)
    rows = v.table[v.table["name"] == name]
    if feature is not None:
        if feature >= len(rows):
            raise ConfigError(f"analysis.only: {name} has {len(rows)} features, so no feature {feature}")
        _feature(v, rows[feature], out)
        return
    counts = ", ".join(f"{int((rows['verdict'] == k).sum())} {k}" for k in VERDICTS)
    print(f"{name}: {len(rows)} features: {counts} (null: {v.why}; FDR per dictionary)", file=out)
    real = rows[rows["verdict"] == "real"]
    top = real[np.lexsort((real["p"], -real["stability"]))][:20]
    print(f"the {len(top)} most stable real features (of {len(real)}): feature, stability, match cosine in "
          f"{rows['match_in'][0] or '-'}, q, firing frequency", file=out)  # fmt: skip
    for r in top:
        cells = f"{r['stability']:.2f}  {r['match_cos']:.3f}  {r['q']:.2e}  {r['firing_frequency']:.2e}"
        print(f"  {r['feature']:>6}  {cells}", file=out)


def _feature(v: Verdicts, row, out) -> None:
    print(f"{row['name']}:{row['feature']}: {row['verdict']} (p {row['p']:.3g}, q {row['q']:.3g}, replications "
          f"{row['replications']} of {row['references']}, stability {row['stability']:.2f}, firing frequency "
          f"{row['firing_frequency']:.3g})", file=out)  # fmt: skip
    key = (int(row["dict_size"]), int(row["seed"]))
    for (a, r), (cos, idx, p, _) in sorted(v.matches.items()):
        if a == key:
            print(f"  in J={r[0]} seed {r[1]}: feature {idx[row['feature']]} at cosine {cos[row['feature']]:.3f} "
                  f"(p {p[row['feature']]:.3g})", file=out)  # fmt: skip
