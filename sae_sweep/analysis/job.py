"""Stage ``analyze``: collect a sweep's dictionaries, measure them, write the report (and W&B).

``run`` is what ``analyze.py`` calls: the main variant and each control through ``measures.pairwise.compute`` and
``measures.variant.measure_variant``, then ``report.document.write_all`` into a temporary folder that replaces the
old report whole (``files.atomic_folder``), a summary table on the console, and an analysis run on W&B when logging
is on.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

from sae_sweep import rules
from sae_sweep.analysis.collect import Collection, collect_local_variants, collect_wandb, main_variant
from sae_sweep.analysis.measures.architectures import arch_of, architecture_table, stability
from sae_sweep.analysis.measures.calibration import attach
from sae_sweep.analysis.measures.controls import control_rows
from sae_sweep.analysis.measures.pairwise import Results, check_sizes, compute, counts, learned_name, random_name
from sae_sweep.analysis.measures.variant import AnalysedRun, measure_variant
from sae_sweep.analysis.partial import check_one_source, keep_comparable
from sae_sweep.analysis.products import write_products
from sae_sweep.analysis.question import answer, parse_only, variant_of, verdicts_of
from sae_sweep.analysis.report.document import write_all
from sae_sweep.analysis.report.section import ReportInput
from sae_sweep.analysis.settings import AnalysisConfig, AnalyzeJob
from sae_sweep.analysis.wandb_run import analysis_run
from sae_sweep.errors import ConfigError, SaeSweepError
from sae_sweep.files import atomic_folder
from sae_sweep.outputs import check_output, mark
from sae_sweep.stages import Stages
from sae_sweep.store import ArtifactStore
from sae_sweep.truth import load_true_features

log = logging.getLogger(__name__)


def _progress(iterable, total: int, description: str):
    from rich.progress import track  # noqa: PLC0415

    return track(iterable, total=total, description=description, transient=True)


def _collect(job: AnalyzeJob, api=None) -> tuple[Collection, list[ArtifactStore], str]:
    """Every variant's dictionaries, the stores that may hold their true features, and where they came from."""
    if job.source.kind == "foreign":
        from sae_sweep.interop.foreign import collect_foreign  # noqa: PLC0415

        where = Path(job.source.path).expanduser()
        return collect_foreign(where, job.analysis.layer, job.source.hook), [ArtifactStore(job.paths.store)], str(where)
    if job.source.kind == "local":
        where = Path(job.source.path).expanduser() if job.source.path else job.paths.store
        found = collect_local_variants(where, job.analysis.layer)
        return found, [ArtifactStore(where), ArtifactStore(job.paths.store)], str(where)
    found = collect_wandb(job.source, job.analysis.layer, job.paths.cache / "wandb", api=api)
    return found, [ArtifactStore(job.paths.store)], f"W&B project {job.source.project}"


def _analyse(job: AnalyzeJob, variant: str, dicts: dict, stores: list[ArtifactStore], truth) -> AnalysedRun:
    cfg = _sizes_of(job.analysis, dicts, variant)
    res = compute(dicts, cfg, progress=_progress)
    ex = measure_variant(res, dicts, cfg, variant, job.paths.cache, truth, progress=_progress)
    return AnalysedRun(variant, res, ex, dicts, job.paths.cache, truth)


def run(job: AnalyzeJob, api=None) -> Path | None:
    """Write the report to ``job.out`` (replaced whole, only once complete) and return report.md's path; with
    ``analysis.only``, print what it asks instead (question.py) and return None."""
    cfg = job.analysis
    check(job)
    stages = Stages()
    with stages("collect") as made:
        found, stores, where = _collect(job, api)
        check_one_source(found)  # a dictionary trained on other activations is never compared as one of the sweep
        made(f"{sum(len(d) for d in found.values())} dictionaries in {len(found)} variants")
    if cfg.only is not None:
        name = parse_only(cfg.only)[0]
        variant = variant_of(found, name)
        sizes = _sizes_of(cfg, found[variant], variant)
        answer(verdicts_of(found, variant, sizes, job.paths.cache, asked=name), cfg.only)
        return None
    main_name = main_variant(found, cfg.variant, where)
    _warn_unconverged([found[v] for v in sorted(found) if v == main_name or cfg.controls])
    check_sizes(cfg, sorted({j for j, _ in found[main_name]}))  # a reference or featured size that is not there
    found, left_out = keep_comparable(found, cfg.reference)  # a partial sweep: what can be compared, and what not
    for line in left_out.get(main_name, []) + [n for v in found if v != main_name for n in left_out.get(v, [])]:
        log.warning("%s", line)
    dicts = found[main_name]
    log.info("comparing %d dictionaries: %s", len(dicts), ", ".join(d.name for _, d in sorted(dicts.items())))
    with stages("measure") as made:
        rep = _measure(job, found, main_name, stores)
        rep.res.warnings.extend(left_out.get(main_name, []))  # said in the report too
        made("the main run" + (f" and {len(found) - 1} controls" if cfg.controls and len(found) > 1 else ""))
    runs = [r for r in (rep.run, rep.synthetic) if r is not None]
    if cfg.calibrate:  # made here, not inside the report, so that its cost has a row of its own
        with stages("calibrate") as made:
            made(", ".join(f"{r.variant or 'the note'}: {'calibrated' if attach(r) else 'not calibratable'}"
                           for r in runs))  # fmt: skip
    for r in runs:
        attach(r)  # a calibration kept from an earlier analysis of the same dictionaries (else none)
    with stages("report") as made:  # the per-feature verdicts are measured here, by their section
        with atomic_folder(job.out, replace=True) as tmp:
            figs = write_all(rep, tmp, label=_label(main_name, dicts))
            cores = write_products(rep.run, tmp)
            mark(tmp, "report")  # what the next analysis may replace: this folder, holding these entries
        made(f"{len(figs)} figures, {len(list(job.out.glob('*.csv')))} tables, {len(cores)} stable cores")
    if job.logger.kind == "wandb":
        with stages("wandb") as made:
            used = [d.path for v in found if v == main_name or cfg.controls for d in found[v].values()]
            analysis_run(job, rep.run, job.out, {k: job.out / p.name for k, p in figs.items()}, inputs=used)
            made("the analysis run")
    print_summary(rep.res, job.out / "findings.md")
    report = job.out / "report.md"
    log.info("%s", stages.table(f"analysis of {where}"))
    log.info("report: %s", report)
    return report


def _measure(job: AnalyzeJob, found: Collection, main_name: str, stores: list[ArtifactStore]) -> ReportInput:
    """The main run's measures, then each control's (the first synthetic-data one whole, for its ground truth), the
    controls' rows and the architectures' comparison: what the report is written from."""
    cfg, dicts = job.analysis, found[main_name]
    main = _analyse(job, main_name, dicts, stores, _true_features(stores, dicts))
    control_table = control_rows(main_name, main.results, dicts, main.measures.fits)
    runs = {main_name: (main.results, dicts, None, main.measures.shared)}  # for the architectures' comparison
    synthetic = None  # the first synthetic-data control, whose ground truth joins the report
    for variant in control_order(found) if cfg.controls else []:
        if variant == main_name:
            continue
        log.info("control %r: %d dictionaries", variant, len(found[variant]))
        true = _true_features(stores, found[variant])
        if true is not None and synthetic is None and not main.measures.ground_truth:
            synthetic = _analyse(job, variant, found[variant], stores, true)
            fits = synthetic.measures.fits
            res_v = synthetic.results
        else:
            res_v, fits = compute(found[variant], _sizes_of(cfg, found[variant], variant), progress=_progress), None
        control_table += control_rows(variant, res_v, found[variant], fits)
        analysed = synthetic is not None and res_v is synthetic.results  # its shared-seed rows are already there
        runs[variant] = (res_v, found[variant], true, synthetic.measures.shared if analysed else None)
    baselines = [main_name] + ([synthetic.variant] if synthetic else [])
    arch_table = architecture_table(runs, baselines, cfg)
    return ReportInput(main, synthetic, control_table, arch_table, stability(arch_table, cfg.level))


def control_order(found: Collection) -> list[str]:
    """The variants in the order the controls are analysed: ReLU first, then data without a hierarchy before data
    with one, so that the synthetic section takes the first synthetic ReLU run on plain data (experiment=synthetic),
    not another architecture's or experiment=hierarchy's."""
    hierarchical = lambda v: bool((next(iter(found[v].values())).config.synthetic or {}).get("groups"))  # noqa: E731
    return sorted(found, key=lambda v: (arch_of(found[v]) != "relu", hierarchical(v), v))


def _sizes_of(cfg: AnalysisConfig, dicts: dict, variant: str) -> AnalysisConfig:
    """``cfg`` for one variant: a reference or featured size set for the main run that this variant lacks is left to
    the default (its largest size; the one closest to 1024), with a line saying so."""
    sizes = sorted({j for j, _ in dicts})
    keep = {"reference": cfg.reference if cfg.reference in sizes else None}
    keep["featured"] = (
        cfg.featured if cfg.featured in sizes and cfg.featured < (keep["reference"] or sizes[-1]) else None
    )
    for key, value in keep.items():
        if getattr(cfg, key) is not None and value is None:
            log.info(
                "variant %r has no J=%s (sizes %s): analysis.%s left to its default",
                variant,
                getattr(cfg, key),
                sizes,
                key,
            )
    return replace(cfg, **keep)


def check(job: AnalyzeJob) -> None:
    """What can be checked before any work: the rules between the job's values (rules.py), the device, the question
    of ``analysis.only``. What depends on the dictionaries found (the reference size, the variant) comes after."""
    rules.enforce(rules.analyze_view(job), machine=True)
    check_device(job.analysis.device)
    if job.analysis.only is not None:
        parse_only(job.analysis.only)  # a malformed question
    else:
        check_output(job.out, "report", f"out_dir={job.out}", "give out_dir a new folder", kept_folders(job),
                     legacy=legacy_report)  # fmt: skip


def kept_folders(job: AnalyzeJob) -> dict[str, Path]:
    """The folders a report may not replace, hold or be written into: the data sae-sweep keeps, and the SAEs read."""
    kept = {"the store": job.paths.store, "the caches": job.paths.cache, "the runs": job.paths.runs}
    if job.source.kind in ("local", "foreign") and job.source.path:
        kept["the SAEs being analysed (source.path)"] = Path(job.source.path)
    return kept


REPORT_SUFFIXES = (".md", ".csv", ".png", ".json", ".npz")


def legacy_report(entries: list[Path]) -> bool:
    """A report folder written before reports carried their marker: report.md, and only the kinds of file and the
    stable-core folder a report writes."""
    return any(p.name == "report.md" for p in entries) and all(
        (p.is_file() and p.suffix in REPORT_SUFFIXES) or (p.is_dir() and p.name == "core") for p in entries
    )


def check_device(device: str | None) -> None:
    """ConfigError for an ``analysis.device`` torch cannot use here (no CUDA, or a name torch does not know)."""
    if device is None:
        return
    import torch  # noqa: PLC0415 - the measures need it anyway

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ConfigError(f"analysis.device={device!r} is not a device torch knows: use cpu or cuda") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"analysis.device={device}: this machine has no CUDA device torch can use; use "
                          "analysis.device=cpu, or drop the override (CUDA is used when there is one)")  # fmt: skip
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"analysis.device={device!r}: the analysis runs on cpu or cuda")


def _warn_unconverged(collections: list[dict]) -> None:
    """One warning per dictionary that did not meet its stopping rule: its numbers describe a dictionary still
    learning."""
    for dicts in collections:
        for _, d in sorted(dicts.items()):
            if not d.config.imported and not d.config.converged:
                log.warning(
                    "%s did not converge within its cap (%d activations seen): the report marks it",
                    d.name,
                    d.config.training["activations_seen"],
                )


def _true_features(stores: list[ArtifactStore], dicts: dict):
    """The true features of synthetic-data dictionaries (None for real activations, or when not found)."""
    recorded = next(iter(dicts.values())).config.synthetic
    if not recorded:
        return None
    for store in stores:
        try:
            true = load_true_features(store, recorded)
        except SaeSweepError:
            continue
        if true is not None:
            return true
    log.warning("the true features of these synthetic dictionaries are in none of %s", [str(s.root) for s in stores])
    return None


def _label(variant: str, dicts: dict) -> str:
    config = next(iter(dicts.values())).config
    if config.imported:
        return f"{'the main run' if not variant else f'variant {variant!r}'} (SAEs trained elsewhere, imported)"
    gpt = config.gpt_artifact
    what = f"activations of {gpt}" if gpt else "synthetic activations" if config.synthetic else "activations"
    return f"{'the main run' if not variant else f'variant {variant!r}'} ({what})"


def print_summary(res: Results, findings: Path | None = None) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.markdown import Markdown  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"MCS against J={res.reference} (high: MCS >= {res.config.threshold})")
    columns = (
        "size",
        "seed",
        "features",
        "mean MCS",
        "high",
        "low",
        "high %",
        "EMD(learned,rand1)",
        "EMD(rand1,rand2)",
    )
    for col in columns:
        table.add_column(col, justify="right")
    rand2 = random_name(2) if res.config.n_random > 1 else random_name(1)
    for s in res.seeds:
        for r in counts(res, s):
            j = r["dict_size"]
            table.add_row(
                *(str(r[k]) for k in ("dict_size", "seed", "n")),
                f"{r['mean_mcs']:.3f}",
                str(r["high"]),
                str(r["low"]),
                f"{100 * r['high_fraction']:.1f}",
                f"{res.emd_between(j, learned_name(s, res.seeds), random_name(1)):.4f}",
                f"{res.emd_between(j, random_name(1), rand2):.4f}",
            )
    means = ", ".join(
        f"M={M}: mean {res.null_mean[M]:.3f}, 99.9% {res.null_q999[M]:.3f}" for M in sorted(res.null_mean)
    )
    console = Console(width=None if sys.stdout.isatty() else 120)  # logs and CI are not 80 columns wide
    if table.row_count:
        console.print(table)
    else:  # one dictionary size: nothing was compared, so say that instead of drawing an empty table
        console.print(f"no MCS table: one dictionary size only (J={', '.join(map(str, res.sizes))}); the pairwise "
                      "MCS, EMD and counts need two sizes of a seed")  # fmt: skip
    if means:
        console.print(f"analytic null (K={res.d_in}): {means}")
    if findings is not None and findings.exists():
        console.print(Markdown(findings.read_text()))
