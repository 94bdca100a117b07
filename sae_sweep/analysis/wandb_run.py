"""The analysis on W&B: one run (job type ``analysis``, named for its main variant) with what the report holds, in forms
the UI can use.

* every figure, as an image; every CSV of the report as a ``wandb.Table`` whose cells are typed back to numbers, so
  that columns sort, filter and plot on numeric axes;
* each dictionary's MCS against its seed's reference as a histogram (``mcs/<name>``), which the UI re-plots;
* ``table/dictionaries``: a row per dictionary of the main run with its training run's id (``run_id``, the id of
  its W&B run), how it trained, its high-MCS fraction and its verdict counts, to join with the runs table;
* lineage: every dictionary analysed is declared an input (lineage.py), and each stable core an output;
* online, the same per-dictionary results written into each training run's summary (``analysis/*``), so that the
  runs table shows them beside the training metrics (``annotate_training_runs``).

A W&B failure is a warning, never a lost report.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sae_sweep.analysis.measures.verdicts import VERDICTS, feature_verdicts
from sae_sweep.analysis.products import CORE_DIR
from sae_sweep.analysis.stable_core import CORE_TYPE
from sae_sweep.lineage import declare_inputs, reference
from sae_sweep.store import ArtifactStore
from sae_sweep.tracking import log_artifact, quiet_settings, wandb_mode

log = logging.getLogger(__name__)


def dictionary_rows(run) -> list[dict]:
    """A row per dictionary of an analysed run: its W&B run id, how it trained, its MCS and verdict counts."""
    res = run.results
    table = run.measured(feature_verdicts).table
    rows = []
    for (j, s), d in sorted(run.dicts.items()):
        v = res.vs_reference(j, s)
        mine = table[table["name"] == d.name] if table is not None else []
        row = {"name": d.name, "run_id": d.config.run_id, "dict_size": j, "seed": s, "variant": run.variant or "(note)",
               "converged": res.converged.get((j, s)), "reference": res.reference,
               "mean_mcs": None if v is None else float(v.mean()),
               "high_fraction": None if v is None else float((v >= res.config.threshold).mean())}  # fmt: skip
        row |= {k: int((mine["verdict"] == k).sum()) for k in VERDICTS} if len(mine) else dict.fromkeys(VERDICTS)
        rows.append(row)
    return rows


def annotate_training_runs(api, entity: str | None, project: str, rows: list[dict]) -> int:
    """Write each dictionary's results into its training run's summary (``analysis/<key>``) through the public API;
    returns how many runs were updated. A run that cannot be found or updated is named in a warning and skipped."""
    done = 0
    for row in rows:
        path = "/".join(p for p in (entity, project, row["run_id"]) if p)
        try:
            target = api.run(path)
            for key in ("mean_mcs", "high_fraction", "reference", *VERDICTS):
                target.summary[f"analysis/{key}"] = row[key]
            target.update()
            done += 1
        except Exception as exc:  # noqa: BLE001 - the report and the analysis run are complete without it
            log.warning("could not write the analysis into W&B run %s (%s: %s)", path, type(exc).__name__, exc)
    return done


def analysis_run(job, run, out: Path, figs: dict[str, Path], inputs: list[Path] = (), api=None) -> None:
    """The W&B analysis run of ``job`` for the analysed main ``run``, from the report in ``out``.

    ``inputs``: the folders of every dictionary analysed (controls included), declared as the run's inputs by their
    exact W&B references (recorded for ``python -m sae_sweep.sync`` where W&B cannot link them now); the stable cores
    in ``out/core`` are logged as its outputs. ``api``: the public API for annotating the training runs (online
    only; None: ``wandb.Api()``)."""
    try:
        import wandb  # noqa: PLC0415

        run_dir = job.paths.runs / "analysis"
        run_dir.mkdir(parents=True, exist_ok=True)
        mode = wandb_mode(job.logger, where=str(run_dir / "wandb"))
        w = wandb.init(project=job.logger.project, entity=job.logger.entity, job_type="analysis",
                       name=f"analysis-{run.variant or 'note'}", group=job.logger.group or "analysis",
                       dir=str(run_dir), mode=mode, config=asdict(job.analysis),
                       tags=[*job.logger.tags, "analysis"], settings=quiet_settings())  # fmt: skip
        rows = dictionary_rows(run)
        refs = sorted({r for r in map(reference, inputs) if r})  # foreign dictionaries are not on W&B
        declare_inputs(w, refs, run_dir)
        _log_report(w, run, out, figs, rows)
        cores = ArtifactStore(out / CORE_DIR)
        for name in cores.names(CORE_TYPE):
            log_artifact(w, cores.get(name), description=f"the stable core of {name.removeprefix('sae-core-')}")
        offline = w.settings.mode in ("offline", "dryrun")
        wandb_dir = Path(w.dir).parent
        w.finish()
        if offline:
            log.info("W&B analysis run kept offline; upload it with: wandb sync %s", wandb_dir)
        else:
            n = annotate_training_runs(api or wandb.Api(), job.logger.entity, job.logger.project, rows)
            log.info("the analysis written into %d of %d training runs' summaries", n, len(rows))
    except Exception as exc:  # noqa: BLE001
        log.warning(
            "W&B logging of the analysis failed (%s: %s); the report is complete at %s", type(exc).__name__, exc, out
        )


def _log_report(w, run, out: Path, figs: dict[str, Path], rows: list[dict]) -> None:
    import wandb  # noqa: PLC0415

    w.log({key: wandb.Image(str(path)) for key, path in figs.items()})
    for table in sorted(out.glob("*.csv")):
        with open(table) as f:
            lines = list(csv.reader(f))
        if lines:  # numbers as numbers, so that the UI can sort, filter and plot them (features.csv above all)
            data = [[typed(cell) for cell in line] for line in lines[1:]]
            w.log({f"table/{table.stem}": wandb.Table(columns=lines[0], data=data)})
    if rows:
        w.log({"table/dictionaries": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])})
    res = run.results
    for (j, s), d in sorted(run.dicts.items()):
        v = res.vs_reference(j, s)
        if v is not None:
            w.log({f"mcs/{d.name}": wandb.Histogram(np.asarray(v), num_bins=min(64, res.config.bins))})
    w.summary.update({f"null_mean_M{M}": v for M, v in res.null_mean.items()})
    w.summary["dictionaries"] = len(rows)
    if (out / "findings.md").exists():  # the generated Findings, as text on the run's overview
        w.summary["findings"] = (out / "findings.md").read_text()


def typed(cell: str):
    """A CSV cell as the int, float, bool or None it was written from; any other text as it is."""
    if cell in ("", "None"):
        return None
    if cell in ("True", "False"):
        return cell == "True"
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell
