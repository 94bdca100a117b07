"""Experiment tracking with W&B: the logger settings, the offline fallback, artifact upload, a quiet console.

Shared by both halves: training jobs log through Lightning's W&B logger (``train/loggers.py`` wraps it), the analysis
job through ``wandb.init``. Either way W&B never ends a job: an unreachable server means offline logging and a
``wandb sync`` hint, and a W&B failure mid-run is a warning (the local products are always complete).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

from sae_sweep.errors import ConfigError
from sae_sweep.lineage import aliases
from sae_sweep.store import Artifact

log = logging.getLogger(__name__)

LOGGER_KINDS = ("wandb", "none")
WANDB_MODES = ("online", "offline")
_OFFLINE_ENV = ("offline", "dryrun", "disabled")


@dataclass(frozen=True)
class LoggerConfig:
    kind: str = "wandb"  # wandb | none (a CSV of every metric is always written beside the run)
    mode: str = "offline"  # offline works with no account; `wandb sync` uploads later
    project: str = "sae-sweep"
    entity: str | None = None
    tags: tuple[str, ...] = ()
    group: str | None = None  # every run's W&B group; None: a multirun's sweep (config.sweep_name), else the job's own

    def __post_init__(self) -> None:
        if self.kind not in LOGGER_KINDS:
            raise ConfigError(f"logger.kind must be one of {LOGGER_KINDS}, got {self.kind!r}")
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"logger.mode must be one of {WANDB_MODES}, got {self.mode!r}")


def wandb_host() -> tuple[str, int]:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    return url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)


def wandb_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the W&B server opens within ``timeout``: a failed start must not fail the job."""
    try:
        socket.create_connection(wandb_host(), timeout=timeout).close()
        return True
    except OSError:
        return False


def wandb_mode(cfg: LoggerConfig, where: str) -> str:
    """ "online" or "offline": offline when asked (config or WANDB_MODE), or when the server cannot be reached.

    ``where`` says in the warning where the offline run is kept.
    """
    if cfg.mode == "offline" or os.environ.get("WANDB_MODE", "") in _OFFLINE_ENV:
        return "offline"
    if wandb_reachable():
        return "online"
    log.warning(
        "the W&B server (%s) cannot be reached: logging offline to %s and keeping everything locally; upload it "
        "later with `wandb sync`",
        wandb_host(),
        where,
    )
    return "offline"


def quiet_settings():
    """W&B settings that keep its banners and run summaries off the console; the run itself logs everything."""
    import wandb  # noqa: PLC0415 - W&B loads only when a job logs to it

    return wandb.Settings(silent=True, quiet=True)


def log_artifact(run, artifact: Artifact, extra_aliases: tuple[str, ...] = (), description: str | None = None):
    """Upload a store artifact to a W&B run under the same name and type, with its metadata and description, and
    aliases for its store version and exact content besides ``latest`` (lineage.aliases) and ``extra_aliases``."""
    import wandb  # noqa: PLC0415

    art = wandb.Artifact(artifact.name, type=artifact.type, metadata=artifact.metadata, description=description)
    for path in sorted(p for p in artifact.path.rglob("*") if p.is_file()):  # file by file: add_dir prints a line
        art.add_file(str(path), name=path.relative_to(artifact.path).as_posix())
    return run.log_artifact(art, aliases=aliases(artifact, extra_aliases))


def wandb_api(why: str):
    """``wandb.Api()``, or a ConfigError in one line when W&B has no login here (``why``: what needed it)."""
    import wandb  # noqa: PLC0415

    try:
        return wandb.Api()
    except wandb.errors.UsageError as exc:  # no API key: W&B's own message says so, with a traceback
        raise ConfigError(
            f"{why} needs a W&B login, and there is none here ({exc}): run `wandb login` (or set WANDB_API_KEY), "
            "then run this again"
        ) from None


def end_session() -> None:
    """Tear W&B's session in this process down now, quietly, whether its service is alive or gone: W&B's exit hook
    then has nothing left to do (with the service gone, it would print a ConnectionResetError traceback). A later
    run in the process starts a new session."""
    import wandb  # noqa: PLC0415

    try:
        wandb.teardown()
    except Exception:  # noqa: BLE001 - a broken session has nothing more to tear down
        pass


def abandon_run(run) -> None:
    """Let go of a broken W&B run, so that it neither fails nor blocks anything later in this process.

    Finish it if it still can be. If not (its service process is gone), tear W&B's session down, which also keeps
    W&B's exit hook from printing a traceback at exit, and stop it being ``wandb.run``, so that a later job in this
    process (a Hydra multirun runs its jobs one after another) starts its own run instead of reusing this one.
    """
    if run is None:
        return
    import wandb  # noqa: PLC0415

    try:
        run.finish(exit_code=1)
        return
    except Exception:  # noqa: BLE001 - already broken: the warning has said all there is to say
        pass
    end_session()
    if wandb.run is run:
        try:
            from wandb.sdk.lib import module  # noqa: PLC0415

            module.unset_globals()
        except Exception:  # noqa: BLE001
            wandb.run = None
