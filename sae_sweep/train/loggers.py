"""A training run's loggers: a CSV of every metric that survives resumes, and a W&B logger that never ends a run.

``build_loggers`` makes both (W&B offline when asked or when its server cannot be reached); ``finish_wandb``
uploads the finished artifact to the run, with its summary and the feature-density histogram, and closes it;
``closed_if_cut_short`` closes the run when a job ends between its training and that upload.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from sae_sweep.files import atomic_write_text
from sae_sweep.lineage import declare_inputs
from sae_sweep.store import Artifact
from sae_sweep.tracking import LoggerConfig, abandon_run, end_session, log_artifact, quiet_settings, wandb_mode
from sae_sweep.wandb_records import STEP_KEY, logged_rows, run_files

log = logging.getLogger(__name__)


def build_loggers(
    cfg: LoggerConfig,
    run_dir: Path,
    name: str,
    group: str | None = None,
    job_type: str | None = None,
    config: dict | None = None,
) -> list:
    """A CSV logger always; a W&B logger unless logger=none, guarded so that W&B trouble never ends the run.

    The W&B run is named ``name`` (the run folder's, a digest of the job) and takes it as its id too, with
    ``resume="allow"``: a job killed, pre-empted or requeued and resumed goes on in the same W&B run online (offline,
    wandb writes a second folder under the same id, which ``wandb sync`` uploads as that one run). Its group is
    ``logger.group`` (a multirun's sweep, config.sweep_name) else ``group``; ``job_type`` says the stage;
    ``config``: the axes that tell runs apart, as top-level keys.
    """
    csv_logger = ResumingCSVLogger(run_dir, name="csv", version="")
    loggers: list = [csv_logger]
    if cfg.kind == "wandb":
        offline = wandb_mode(cfg, where=str(run_dir / "wandb")) == "offline"
        wandb_logger = GuardedWandbLogger(
            csv_path=Path(csv_logger.log_dir) / "metrics.csv",
            name=name,
            id=name,
            resume="allow",
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group or group,
            job_type=job_type,
            tags=[*cfg.tags, *([job_type] if job_type else [])],
            config=config or {},
            save_dir=str(run_dir),
            offline=offline,
            settings=quiet_settings(),
        )
        loggers.append(wandb_logger)
    return loggers


class ResumingCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run keeps the rows its interrupted run wrote before the resume.

    Lightning's deletes metrics.csv when a run starts in a folder that has one, so a job resumed after a kill, a
    SIGTERM or a requeue would keep only the curves from where it resumed. This one keeps every earlier row before the
    first step the resumed run logs (the rows after it are logged again, from the same batches), and writes its rows
    out at every checkpoint, not only every 100 steps.
    """

    @property
    def experiment(self):
        if self._experiment is None and rank_zero_only.rank == 0:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(log_dir=self.log_dir)
        return CSVLogger.experiment.fget(self)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self.save()  # the rows up to each checkpoint reach the disk with it: a resumed run's curves have no gap


class _ResumingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # instead of deleting an earlier metrics.csv, trim it at the first save
        self._earlier = os.path.isfile(self.metrics_file_path)

    def save(self) -> None:
        if self._earlier and self.metrics:
            self._keep_rows_before(min(int(m["step"]) for m in self.metrics))
        super().save()

    def _keep_rows_before(self, step: int) -> None:
        path = Path(self.metrics_file_path)
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = list(reader.fieldnames or [])
                rows = [row for row in reader if row.get("step") and int(float(row["step"])) < step]
        except (ValueError, TypeError, csv.Error) as exc:  # bad UTF-8, a torn or edited row
            log.warning("%s is damaged (%s): its rows before step %d are dropped, the curves restart there",
                        path, type(exc).__name__, step)  # fmt: skip
            path.unlink()
            self.metrics_keys, self._earlier = [], False  # the next save writes a new file
            return
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, out.getvalue())
        self.metrics_keys, self._earlier = header, False  # the next save appends (or widens the header)


class GuardedWandbLogger(WandbLogger):
    """Lightning's WandbLogger, except that a W&B failure never ends the run.

    The first exception from W&B (its service process gone, a full disk under its run folder, a server error) is
    warned about once, naming the step, where the metrics go on (the CSV beside the run) and how to upload what W&B
    logged before it (``wandb sync``); then W&B is off for the rest of the run. Training, the CSV metrics, the
    checkpoints and the local artifact carry on. ``failure`` says what went wrong (None while W&B works).
    """

    def __init__(self, *args, csv_path: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)  # deprecated in W&B: passing it at all prints a warning
        self.csv_path = csv_path
        self.failure: str | None = None
        self.wandb_dir: Path | None = None  # the run's folder, which `wandb sync` uploads
        self._step = 0
        self._earlier: dict[int, set] | None = None  # {step: keys} earlier parts of the run logged
        self._logged_through = -1

    @property
    def experiment(self):
        if self.failure is not None:
            return _WandbOff()
        try:
            run = WandbLogger.experiment.fget(self)
        except Exception as exc:  # noqa: BLE001 - W&B trouble must never end a training run
            self.fail("starting the W&B run", exc)
            return _WandbOff()
        if self.wandb_dir is None and isinstance(getattr(run, "dir", None), str):
            self.wandb_dir = Path(run.dir).parent
        return run

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self._guarded("logging hyperparameters", super().log_hyperparams, params, *args, **kwargs)

    def log_metrics(self, metrics, step: int | None = None) -> None:
        self._step = self._step if step is None else step
        if step is not None and self.failure is None:
            metrics = self._not_logged_before(metrics, step)
            if not metrics:
                return
        self._guarded("logging metrics", super().log_metrics, metrics, step)

    def _not_logged_before(self, metrics: dict, step: int) -> dict:
        """``metrics`` less what an earlier part of this W&B run logged at ``step``: a resumed job re-runs the steps
        after its checkpoint, and must log none of them twice. At the first call, the rows of the CSV before
        ``step`` that no earlier part logged (a killed writer's unflushed records) are logged first, so that the
        run's history holds every row once."""
        if self._earlier is None:
            self._earlier, self._logged_through = self._earlier_rows()
            for row_step, row in _csv_rows(self.csv_path):
                missing = {k: v for k, v in row.items() if k not in self._earlier.get(row_step, ())}
                if row_step < step and missing and row_step > self._logged_through:
                    self._guarded("logging earlier metrics", super().log_metrics, missing, row_step)
        if step <= self._logged_through:
            return {}
        done = self._earlier.get(step, ())
        return {k: v for k, v in metrics.items() if k not in done}

    def _earlier_rows(self) -> tuple[dict[int, set], int]:
        """What earlier parts of this run logged: {step: metric keys} from the run's earlier folders here (a resumed
        run writes one folder per start, offline and online alike), and -1, or, online where there are none (a job
        resumed on another machine), the last step logged on the server, through which nothing is logged again."""
        rows: dict[int, set] = {}
        through = -1
        try:
            run = self.experiment  # started here, so that its own folder is known
            files = [f for f in run_files(Path(self.save_dir) / "wandb", self._wandb_init["id"])
                     if f.parent != self.wandb_dir]  # fmt: skip
            for f in files:
                for row_step, keys in logged_rows(f):
                    rows.setdefault(row_step, set()).update(keys)
            last = None if files or run.offline else run.summary.get(STEP_KEY)
            through = int(last) if isinstance(last, int | float) else -1
        except Exception as exc:  # noqa: BLE001 - at worst a step shows twice on W&B; the CSV is right anyway
            log.warning("could not read what this W&B run logged before (%s: %s)", type(exc).__name__, exc)
        if rows or through >= 0:
            log.info("resuming W&B run %s, which logged up to step %d before", self._wandb_init["id"],
                     max([through, *rows]))  # fmt: skip
        return rows, through

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self._guarded("logging a checkpoint", super().after_save_checkpoint, checkpoint_callback)

    def finalize(self, status: str) -> None:
        self._guarded("finalizing", super().finalize, status)
        if status != "success" and self.failure is None and self._experiment is not None:
            # A job stopped early (SIGTERM, a requeue, an error): close its run and W&B's session now. Left to W&B's
            # exit hook, under SLURM, which signals every process of the job, the service is gone by then and the hook
            # prints a ConnectionResetError traceback; closing the run alone is not enough, as the hook still talks
            # to the service.
            abandon_run(self._experiment)
            end_session()
            self.failure = f"the run was closed early ({status})"

    def _guarded(self, what: str, fn, *args, **kwargs):
        if self.failure is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - W&B trouble must never end a training run
            self.fail(what, exc)
            return None

    def fail(self, what: str, exc: BaseException) -> None:
        """Warn once and switch W&B off for the rest of this run; let go of the broken W&B run."""
        if self.failure is not None:
            return
        self.failure = f"{type(exc).__name__}: {exc}"
        sync = (
            f"to upload what W&B logged before the failure, run `wandb sync {self.wandb_dir}`"
            if self.wandb_dir is not None
            else "nothing reached W&B"
        )
        log.warning(
            "W&B logging failed at step %d while %s (%s); W&B is off for the rest of this run, which goes on: "
            "metrics continue in %s, checkpoints and the artifact are kept locally; %s",
            self._step,
            what,
            self.failure,
            self.csv_path,
            sync,
        )
        abandon_run(self._experiment)


def _csv_rows(path: Path) -> list[tuple[int, dict]]:
    """(step, {metric: value}) of each row of a run's metrics.csv, in order; none if there is no such file."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step")]
        return [(int(float(r.pop("step"))), {k: float(v) for k, v in r.items() if k and v}) for r in rows]
    except (ValueError, TypeError, csv.Error) as exc:  # bad UTF-8, a torn or edited row: nothing is back-filled
        log.warning("%s is damaged (%s): no earlier row is back-filled to W&B", path, type(exc).__name__)
        return []


class _WandbOff:
    """What ``GuardedWandbLogger.experiment`` gives once W&B is off: every attribute and call is a no-op."""

    def __getattr__(self, name: str):
        return self

    def __call__(self, *args, **kwargs):
        return self


@contextmanager
def closed_if_cut_short(loggers: list) -> Iterator[None]:
    """Close the W&B run if the job ends inside this block with an exception, ``SystemExit`` included.

    Inside ``fit`` Lightning finalizes the loggers when a job stops early; after it (evaluating, saving, uploading)
    nothing does. Under SLURM a time limit lands there too: submitit's handler requeues the job, SLURM then signals
    every process of the step, W&B's service among them, and the handler exits; W&B's exit hook, finding its service
    gone, would print a ConnectionResetError traceback into the job's log.
    """
    try:
        yield
    except BaseException:
        if any(isinstance(lg, WandbLogger) for lg in loggers):
            for lg in loggers:
                if isinstance(lg, GuardedWandbLogger):
                    lg.finalize("interrupted")  # closes an open run
            end_session()  # the run may be finished already; the session (its service connection) is not
        raise


def finish_wandb(
    loggers: list,
    artifact: Artifact,
    summary: dict | None = None,
    uses: str | None = None,
    histograms: dict | None = None,
    images: dict | None = None,
    description: str | None = None,
    aliases: tuple[str, ...] = (),
) -> None:
    """Upload the artifact to the W&B run (if any), record lineage and summary, close it, say how to sync.

    ``uses``: the W&B reference of an input artifact (the GPT of a dictionary, lineage.reference), linked when online
    and recorded under the run folder either way (lineage.declare_inputs). ``histograms``: name ->
    1-D array, each logged as a W&B histogram; ``images``: name -> a PNG, each logged as an image; ``description``:
    the artifact's; ``aliases``: its own, beside lineage.aliases. A W&B failure here, or one earlier in the run, is
    warned about and never fatal: the artifact is already safe in the local store.
    """
    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        if getattr(lg, "failure", None) is not None:  # W&B was switched off mid-run (already warned about)
            log.warning(
                "W&B has been off since it failed (%s): %s is kept locally at %s",
                lg.failure,
                artifact.ref,
                artifact.path,
            )
            continue
        try:
            run = lg.experiment
            offline = bool(run.offline)
            run_dir = Path(run.dir).parent
            media = {"histograms": histograms or {}, "images": images or {}}
            declare_inputs(run, [uses] if uses else [], Path(lg.save_dir))
            _log_to_run(run, artifact, summary, media, description, aliases)
            run.finish()
        except Exception as exc:  # noqa: BLE001 - W&B trouble must never lose a finished local artifact
            if hasattr(lg, "fail"):
                lg.fail(f"uploading the artifact {artifact.ref}", exc)
            else:
                log.warning(
                    "W&B logging failed (%s: %s); the artifact is safe at %s", type(exc).__name__, exc, artifact.path
                )
            continue
        if offline:
            log.info("W&B run kept offline; upload it with: wandb sync %s", run_dir)


def _log_to_run(run, artifact: Artifact, summary: dict | None, media: dict, description, aliases) -> None:
    import wandb  # noqa: PLC0415

    if summary:
        run.summary.update(summary)
    logged = {name: wandb.Histogram(values) for name, values in media["histograms"].items()}
    logged |= {name: wandb.Image(str(path)) for name, path in media["images"].items()}
    if logged:
        run.log(logged)
    log_artifact(run, artifact, aliases, description=description)
