"""The entry points' command line: every override Hydra cannot apply is refused in one line, exit status 2, like
every other bad input, instead of Hydra's multi-line report and status 1.

* Before Hydra runs, an option of a config group that does not exist (``trainer=tpu``, ``experiment=demoo``) is
  named with the options there are. Only groups that are folders of ``conf/`` are checked, and only plain choices
  (``trainer=cpu,gpu`` in a multirun too); Hydra's own groups (``hydra/launcher=...``) and sweep functions
  (``choice(...)``) are Hydra's to judge.
* Whatever else Hydra refuses while composing (an unknown key, an override it cannot parse) is caught and said in
  one line, as is a ``SaeSweepError`` raised outside a job (the SLURM check refusing a request) and a SLURM job
  that ended without its result (submitit's ``UncompletedJobError``), and a folder it cannot write to (a read-only
  or another user's ``paths.root``). ``HYDRA_FULL_ERROR=1`` set by the user keeps
  Hydra's full report instead.
* Ctrl-C ends in one line too, status 130, saying what was kept.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

_GROUP = re.compile(r"^[+~]{0,2}(?P<group>[a-z_]+)=(?P<value>.*)$")


def unknown_choice(argv: list[str], conf: Path) -> str | None:
    """The one-line complaint about the first override choosing an option its group lacks, or None."""
    for arg in argv:
        m = _GROUP.match(arg)
        if m is None or not (conf / m["group"]).is_dir():
            continue
        value = m["value"]
        if "(" in value or value in ("", "null"):
            continue  # a sweep function, or the group removed: Hydra's to judge
        options = sorted(p.stem for p in (conf / m["group"]).glob("*.yaml"))
        for choice in value.split(","):
            if choice not in options:
                return (
                    f"{m['group']}={choice}: there is no such option (conf/{m['group']}/ has: {', '.join(options)}); "
                    f"pick one of them, or add conf/{m['group']}/{choice}.yaml"
                )
    return None


def refuse_unknown_choices(conf: Path, argv: list[str] | None = None) -> None:
    """Exit with status 2 and one line on stderr if the command line picks an option ``conf`` does not have."""
    problem = unknown_choice(sys.argv[1:] if argv is None else argv, conf)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)


def job_ended(message: str) -> str:
    """One line for submitit's UncompletedJobError (a sweep's job that ended without its result): which job, in what
    state, where its log is, and how to resume."""
    job = re.search(r"Job (\S+)", message)
    state = re.search(r"state: ([A-Z_]+)", message)
    log = re.search(r"with path (\S+)", message)
    where = str(Path(log.group(1)).parent) if log else "its .submitit/ folder"  # the folder of its logs
    return (
        f"SLURM job {job.group(1) if job else '?'} ended {state.group(1) if state else 'without a result'} before it "
        f"finished (scancel, a node failure, or its requeues spent; logs in {where}). What it trained is kept: run the "
        "same command again to resume it from its last checkpoint; the jobs that finished are not trained again"
    )


def run(main: Callable[[], None], conf: Path, kept: str = "") -> None:
    """Run a ``hydra.main`` entry point so that a command line Hydra refuses ends in one line and status 2, and
    Ctrl-C in one line (status 130) that says what was kept (``kept``: the entry point's own words)."""
    refuse_unknown_choices(conf)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for Hydra's own, complete report
        main()
        return
    from hydra.errors import HydraException  # noqa: PLC0415
    from omegaconf.errors import OmegaConfBaseException  # noqa: PLC0415

    from sae_sweep.errors import SaeSweepError  # noqa: PLC0415

    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises what it would report, and it reaches the handler below
    try:
        main()
    except KeyboardInterrupt:
        print(f"interrupted (Ctrl-C): nothing half-written is left, as every product is swapped in whole{kept}",
              file=sys.stderr)  # fmt: skip
        sys.exit(130)
    except SaeSweepError as exc:  # raised outside a job (the SLURM check refusing a request): one line
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__
        lines = str(exc).splitlines() + (str(cause).splitlines()[:1] if cause is not None else [])
        print("error: " + " ".join(line.strip() for line in lines if line.strip()), file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a folder it must write to is read-only or not the user's: one line naming it
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        print(f"error: cannot write {exc.filename}: {exc.strerror}. Point paths.root (default ./sae_sweep_out, or "
              "$SAE_SWEEP_ROOT) at a folder you can write to", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    except Exception as exc:
        if type(exc).__name__ != "UncompletedJobError":
            raise
        print(f"error: {job_ended(str(exc))}", file=sys.stderr)  # submitit's: a SLURM job ended without its result
        sys.exit(2)
