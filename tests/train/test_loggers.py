"""A W&B run cut short after training: closed before the process exits, so no traceback reaches the job's log.

The case is the one SLURM makes: a time limit's signal lands after ``fit`` (evaluating, saving, uploading);
submitit's handler requeues the job, SLURM signals every process of the step (W&B's service dies), and the handler
calls ``sys.exit``. Played here by a real offline W&B run whose service is sent SIGTERM before the exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.faults]  # three processes, each starting W&B and signalling its service

JOB = textwrap.dedent(
    """
    import contextlib, os, signal, sys, time
    from pathlib import Path
    from sae_sweep.tracking import LoggerConfig
    from sae_sweep.train.loggers import build_loggers, closed_if_cut_short

    run_dir, how = Path(sys.argv[1]), sys.argv[2]
    loggers = build_loggers(LoggerConfig(), run_dir, name=run_dir.name, group="g", job_type="train-sae")
    run = loggers[1].experiment
    run.log({"loss": 1.0})
    if how == "finished":  # uploaded and closed, then cut short (marking the run folder finished)
        run.finish()
    if how == "in fit":  # what Lightning does when fit ends with an exception, before the service is signalled
        loggers[1].finalize("failed")
    with closed_if_cut_short(loggers) if how != "bare" else contextlib.nullcontext():
        service = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and (p / "stat").is_file()
                   and f") S {os.getpid()} " in (p / "stat").read_text().replace(") R ", ") S ")]
        for pid in service:
            os.kill(pid, signal.SIGTERM)  # what SLURM sends every process of a step it requeues
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}/status").is_file() and "zombie" not in Path(f"/proc/{pid}/status").read_text()
                  for pid in service):
            assert time.monotonic() < deadline, "W&B's service outlived SIGTERM"
            time.sleep(0.05)
        print(f"signalled {len(service)} W&B service process(es)", flush=True)
        sys.exit(-1)  # what submitit's requeue handler ends with
    """
)


def run_jobs(tmp_path: Path, cases: list[str]) -> dict[str, tuple[subprocess.Popen, str]]:
    # Each job starts its own W&B service, as a SLURM job does: not the test process's (WANDB_SERVICE names it once
    # an earlier test in this process used W&B), where the job's service would not be its child.
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, "WANDB_MODE": "offline"}
    procs = {
        case: subprocess.Popen(
            [sys.executable, "-c", JOB, str(tmp_path / case.replace(" ", "-")), case],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for case in cases
    }
    return {case: (proc, proc.communicate(timeout=180)[0]) for case, proc in procs.items()}


def test_a_run_cut_short_is_closed_with_its_session_before_the_exit_and_prints_no_traceback(tmp_path):
    """Cut short after training, the run already finished (``closed_if_cut_short``: an open run is closed by the
    same finalize as inside fit), or inside ``fit`` (Lightning's ``finalize("failed")`` runs while the service is
    still alive, SLURM's signal comes after)."""
    done = run_jobs(tmp_path, ["finished", "in fit", "bare"])
    for case, (proc, out) in done.items():
        left = 0 if case == "in fit" else 1  # finalize("failed") has ended the session, and its service with it
        assert proc.returncode == 255 and f"signalled {left} W&B service process(es)" in out, (case, out[-3000:])
    # Left alone, W&B's exit hook finds its service gone: the traceback this protection keeps out of the log.
    assert "ConnectionResetError" in done["bare"][1], done["bare"][1][-3000:]
    for case in ["finished", "in fit"]:
        assert "Traceback" not in done[case][1], (case, done[case][1][-3000:])
