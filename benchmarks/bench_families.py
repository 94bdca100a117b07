"""What feature families and stable cores add to ``analyze.py``: their time on a real sweep, beside the verdicts they
are read from (which the report computes anyway).

    python benchmarks/bench_families.py sae_sweep_out/store [--variant ""] [--repeats 3]

The main variant's dictionaries are collected and measured as ``analyze.py`` does (``measures.pairwise.compute``),
then, timed: the per-feature verdicts once (what families and cores reuse), and in each repeat, interleaved, the
families (measures/families.py), the stable cores with their held-out FVU (measures/core.py), their report section
(Figure 22 and its CSVs), and the products (core/ and latent_scores.csv, analysis/products.py) written to a temporary
folder. Medians of the repeats; the sum of those four is what the issue's budget bounds (30 s on 2 cores for the
note's sweep).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_sweep.analysis.collect import collect_local_variants, main_variant  # noqa: E402
from sae_sweep.analysis.measures.core import cores_of  # noqa: E402
from sae_sweep.analysis.measures.families import families_of  # noqa: E402
from sae_sweep.analysis.measures.pairwise import compute  # noqa: E402
from sae_sweep.analysis.measures.variant import AnalysedRun, VariantMeasures  # noqa: E402
from sae_sweep.analysis.measures.verdicts import feature_verdicts  # noqa: E402
from sae_sweep.analysis.products import write_products  # noqa: E402
from sae_sweep.analysis.report import core as core_section  # noqa: E402
from sae_sweep.analysis.report import families as families_section  # noqa: E402
from sae_sweep.analysis.report.section import ReportInput, write_section  # noqa: E402
from sae_sweep.analysis.settings import AnalysisConfig  # noqa: E402


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="a store (sae_sweep_out/store) holding a sweep")
    ap.add_argument("--variant", default=None, help="the variant to measure (default: the main one)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    store = Path(args.store)
    cfg = AnalysisConfig()
    found = collect_local_variants(store, cfg.layer)
    variant = main_variant(found, args.variant, str(store))
    dicts = found[variant]
    res = compute(dicts, cfg)
    fresh = lambda: AnalysedRun(variant, res, VariantMeasures(variant, {}), dicts, store.parent / "cache")  # noqa: E731
    run = fresh()
    t_verdicts = _timed(lambda: run.measured(feature_verdicts))
    v = run.measured(feature_verdicts)
    times: dict[str, list[float]] = {"families": [], "cores": [], "sections": [], "products": []}
    for _ in range(args.repeats):
        again = fresh()
        again._measured[feature_verdicts] = v  # the verdicts the report has already measured
        rep = ReportInput(again)
        times["families"].append(_timed(lambda: again.measured(families_of)))  # noqa: B023
        times["cores"].append(_timed(lambda: again.measured(cores_of)))  # noqa: B023
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            sections = lambda: [write_section(s, rep, out) for s in (families_section.SECTION, core_section.SECTION)]  # noqa: B023, E731
            times["sections"].append(_timed(sections))
            times["products"].append(_timed(lambda: write_products(again, out)))  # noqa: B023
    print(f"{len(dicts)} dictionaries of variant {variant or '(note)'}: sizes {res.sizes}, seeds {res.seeds}")
    print(f"verdicts (computed once, shared with the report's own section): {t_verdicts:.1f} s")
    medians = {k: statistics.median(t) for k, t in times.items()}
    for k, m in medians.items():
        print(f"  {k:<9} median {m:6.2f} s   ({', '.join(f'{t:.2f}' for t in times[k])})")
    print(f"added by families and cores: {sum(medians.values()):.1f} s (medians of {args.repeats} repeats)")


if __name__ == "__main__":
    main()
