"""Stage ``analyze``: collect a sweep's dictionaries, compute the note's numbers, write the report (and to W&B)."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from sae_sweep import SaeSweepError
from sae_sweep.analysis import (
    AnalysisConfig,
    Results,
    SourceConfig,
    collect_local_variants,
    collect_wandb,
    compute,
    counts,
    main_variant,
)
from sae_sweep.artifacts import ArtifactStore, LoggerConfig, Paths, wandb_host, wandb_reachable
from sae_sweep.beyond import compute_extras, control_rows
from sae_sweep.report import write_all

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalyzeJob:
    analysis: AnalysisConfig
    source: SourceConfig
    logger: LoggerConfig
    paths: Paths
    out_dir: Path | None = None  # None: <paths.root>/analysis

    @property
    def out(self) -> Path:
        return self.out_dir or self.paths.root / "analysis"


def _progress(iterable, total: int, description: str):
    from rich.progress import track  # noqa: PLC0415

    return track(iterable, total=total, description=description, transient=True)


def run(job: AnalyzeJob, api=None) -> Path:
    """Write the report to ``job.out`` (replaced whole, only once complete) and return report.md's path."""
    cfg = job.analysis
    if job.source.kind == "local":
        where = Path(job.source.path).expanduser() if job.source.path else job.paths.store
        found = collect_local_variants(where, cfg.layer)
        stores = [ArtifactStore(where), ArtifactStore(job.paths.store)]
    else:
        where = f"W&B project {job.source.project}"
        found = collect_wandb(job.source, cfg.layer, job.paths.cache / "wandb", api=api)
        stores = [ArtifactStore(job.paths.store)]
    main = main_variant(found, cfg.variant, str(where))
    dicts = found[main]
    log.info("comparing %d dictionaries: %s", len(dicts), ", ".join(d.name for _, d in sorted(dicts.items())))
    res = compute(dicts, cfg, progress=_progress)
    extras = compute_extras(res, dicts, cfg, main, job.paths.cache, _true_features(stores, dicts), progress=_progress)
    control_table = control_rows(main, res, dicts, extras.fits)
    synthetic = (main, res, extras) if extras.ground_truth else None
    for variant in sorted(found) if cfg.controls else []:
        if variant == main:
            continue
        log.info("control %r: %d dictionaries", variant, len(found[variant]))
        res_v = compute(found[variant], cfg, progress=_progress)
        true = _true_features(stores, found[variant])
        ex_v = None
        if true is not None and synthetic is None:
            ex_v = compute_extras(res_v, found[variant], cfg, variant, job.paths.cache, true, progress=_progress)
            synthetic = (variant, res_v, ex_v)
        control_table += control_rows(variant, res_v, found[variant], ex_v.fits if ex_v else None)
    if synthetic is not None and synthetic[0] == main:
        synthetic = None  # the main run is the synthetic one: its ground truth is already in extras
    out = job.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        figs = write_all(res, tmp, extras, control_table, synthetic, label=_label(main, dicts))
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_summary(res, out / "findings.md")
    if job.logger.kind == "wandb":
        _to_wandb(job, res, out, {k: out / p.name for k, p in figs.items()})
    report = out / "report.md"
    log.info("report: %s", report)
    return report


def _true_features(stores: list[ArtifactStore], dicts: dict):
    """The true features of synthetic-data dictionaries (None for real activations, or when not found)."""
    from sae_sweep.synthetic import load_true_features  # noqa: PLC0415

    config = next(iter(dicts.values())).config
    if not config.get("synthetic"):
        return None
    for store in stores:
        try:
            true = load_true_features(store, config)
        except SaeSweepError:
            continue
        if true is not None:
            return true
    log.warning("the true features of these synthetic dictionaries are in none of %s", [str(s.root) for s in stores])
    return None


def _label(variant: str, dicts: dict) -> str:
    config = next(iter(dicts.values())).config
    gpt = (config.get("gpt") or {}).get("artifact")
    what = f"activations of {gpt}" if gpt else "synthetic activations" if config.get("synthetic") else "activations"
    return f"{'the main run' if not variant else f'variant {variant!r}'} ({what})"


def print_summary(res: Results, findings: Path | None = None) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.markdown import Markdown  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"MCS against J={res.reference} (high: MCS >= {res.config.threshold})")
    for col in (
        "size",
        "seed",
        "features",
        "mean MCS",
        "high",
        "low",
        "high %",
        "EMD(learned,rand1)",
        "EMD(rand1,rand2)",
    ):
        table.add_column(col, justify="right")
    for s in res.seeds:
        for r in counts(res, s):
            names, m = res.emd[r["dict_size"]]
            learned = next(i for i, n in enumerate(names) if n.startswith("learned"))
            r1, r2 = names.index("rand1"), names.index("rand2") if "rand2" in names else names.index("rand1")
            table.add_row(
                str(r["dict_size"]),
                str(s),
                str(r["n"]),
                f"{r['mean_mcs']:.3f}",
                str(r["high"]),
                str(r["low"]),
                f"{100 * r['high_fraction']:.1f}",
                f"{m[learned, r1]:.4f}",
                f"{m[r1, r2]:.4f}",
            )
    means = ", ".join(
        f"M={M}: mean {res.null_mean[M]:.3f}, 99.9% {res.null_q999[M]:.3f}" for M in sorted(res.null_mean)
    )
    console = Console(width=None if sys.stdout.isatty() else 120)  # logs and CI are not 80 columns wide
    console.print(table)
    console.print(f"analytic null (K={res.d_in}): {means}")
    if findings is not None and findings.exists():
        console.print(Markdown(findings.read_text()))


def _to_wandb(job: AnalyzeJob, res: Results, out: Path, figs: dict[str, Path]) -> None:
    """An analysis run with every figure and table; a W&B failure is a warning, never a lost report."""
    try:
        import wandb  # noqa: PLC0415

        run_dir = job.paths.runs / "analysis"
        run_dir.mkdir(parents=True, exist_ok=True)
        mode = job.logger.mode
        if mode == "online" and not wandb_reachable():
            log.warning("the W&B server (%s) cannot be reached: logging the analysis offline", wandb_host())
            mode = "offline"
        run = wandb.init(
            project=job.logger.project,
            entity=job.logger.entity,
            job_type="analysis",
            dir=str(run_dir),
            mode=mode,
            config=asdict(job.analysis),
            tags=list(job.logger.tags),
        )
        run.log({key: wandb.Image(str(path)) for key, path in figs.items()})
        for table in sorted(out.glob("*.csv")):
            with open(table) as f:
                rows = list(csv.reader(f))
            if rows:
                run.log({f"table/{table.stem}": wandb.Table(columns=rows[0], data=rows[1:])})
        run.summary.update({f"null_mean_M{M}": v for M, v in res.null_mean.items()})
        if (out / "findings.md").exists():  # the generated Findings, as text on the run's overview
            run.summary["findings"] = (out / "findings.md").read_text()
        offline = run.settings.mode in ("offline", "dryrun")
        wandb_dir = Path(run.dir).parent
        run.finish()
        if offline:
            log.info("W&B analysis run kept offline; upload it with: wandb sync %s", wandb_dir)
    except Exception as exc:  # noqa: BLE001
        log.warning(
            "W&B logging of the analysis failed (%s: %s); the report is complete at %s", type(exc).__name__, exc, out
        )
