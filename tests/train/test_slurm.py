"""SAE sweeps through a real SLURM cluster (tests/slurm_cluster.py: slurmctld, slurmd, slurmdbd with MariaDB, munged,
started once for this module): the README's CPU sweep as an array, a time limit and an operator's requeue that both
resume to the uninterrupted dictionary bit for bit, a cancelled job that ends the sweep in one line, and requests no
node can meet refused before submission. Skipped, with the reason, where SLURM is not installed (.ci/run installs it).

The three sweeps that train run side by side on the cluster (its node offers 4 CPUs and each job asks 1): one
fixture starts them and each test waits for its own.
"""

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sae_sweep.dictionary import load_dictionary
from sae_sweep.store import ArtifactStore

from ..conftest import REPO, SMOKE, fresh_root
from ..slurm_cluster import Cluster, missing

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.skipif(missing() is not None, reason=str(missing()))]

LONG = [*SMOKE, "harvest.n_tokens=800000", "sae.dict_size=1024", "sae.ckpt_every=100"]
STEPS = 800000 // 256  # one pass: long enough (about 30 s) for a time limit's signal to land in training


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield c
    c.stop()


class Sweep:
    """``train.py -m hydra/launcher=slurm ARGS`` running in the background; its output and when it ended."""

    def __init__(self, cluster: Cluster, args: list[str], root: Path) -> None:
        env = {**cluster.env, "SAE_SWEEP_ROOT": str(root), "WANDB_MODE": "offline"}
        self.root, self.output, self.ended_at, self.started_at = root, "", None, time.monotonic()
        cmd = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=slurm", *args]
        out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, **out)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        self.output = self.proc.communicate()[0]
        self.ended_at = time.monotonic()

    def finish(self, timeout: float = 120) -> str:
        self._reader.join(timeout)
        if self._reader.is_alive():
            self.proc.kill()
            raise AssertionError(f"the sweep under {self.root} did not end within {timeout} s")
        return self.output


def job_id(root: Path, timeout: float = 60) -> str:
    """The SLURM id of the first job of the sweep under ``root`` once it is running, with a checkpoint written."""
    deadline = time.monotonic() + timeout
    while not list(root.glob("runs/sae-*/checkpoints/last.ckpt")):
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.1)
    (folder,) = [p for p in root.glob("multirun/*/*/.submitit/*") if re.fullmatch(r"\d+(_\d+)?", p.name)][:1]
    return folder.name


def job_logs(root: Path) -> str:
    return "".join(p.read_text() for p in sorted(root.glob("multirun/*/*/.submitit/*/*_log.*")))


@pytest.fixture(scope="module")
def sweeps(cluster, gpt_root, tmp_path_factory):
    """Four sweeps started at once: the README's array (with the uninterrupted reference), a time limit, a requeue
    and one to cancel (which waits for a CPU); the operator's requeue and the cancel are done here, once each job has
    a checkpoint. The cancel's time is kept as ``cancelled_at``."""
    roots = {k: fresh_root(gpt_root, tmp_path_factory.mktemp(k)) for k in ("array", "limit", "requeue", "cancel")}
    runs = {
        "array": Sweep(cluster, [*LONG, "logger=none", "sae.dict_size=64,1024"], roots["array"]),
        # USR2 is due signal_delay_s before the 1-minute limit, 1 s after each start; slurmctld checks time limits
        # every 30 s, so it lands in each run's first 31 s, in training or (handled by submitit) before it
        "limit": Sweep(
            cluster,
            [
                *LONG,
                "hydra.launcher.timeout_min=1",
                "hydra.launcher.signal_delay_s=59",
                "hydra.launcher.max_num_timeout=6",
            ],
            roots["limit"],
        ),  # fmt: skip
        "requeue": Sweep(cluster, [*LONG, "logger=none"], roots["requeue"]),
        # the default logger: a real offline W&B run, whose service SLURM signals too
        "cancel": Sweep(cluster, LONG, roots["cancel"]),
    }
    cluster.run("scontrol", "requeue", job_id(roots["requeue"]))  # SIGTERM now, the job started again later
    cancelled = job_id(roots["cancel"], timeout=120)
    cluster.run("scancel", cancelled)
    runs["cancel"].cancelled_at, runs["cancel"].job = time.monotonic(), cancelled
    return runs


def dictionary(root: Path, name: str = "sae-L2-J1024-s0"):
    return load_dictionary(ArtifactStore(root / "store").get(name).path)


def test_the_readme_cpu_sweep_runs_as_an_array_with_resources_for_the_cpu(cluster, sweeps):
    root, out = sweeps["array"].root, sweeps["array"].finish()
    assert sweeps["array"].proc.returncode == 0, out[-3000:]
    assert {"sae-L2-J64-s0", "sae-L2-J1024-s0"} <= set(ArtifactStore(root / "store").names())
    (script,) = root.glob("multirun/*/*/.submitit/*/*_submission.sh")
    text = script.read_text()
    assert "#SBATCH --array=0-1%2" in text and "#SBATCH --cpus-per-task=1" in text and "#SBATCH --mem=4GB" in text
    assert "gpus" not in text and "gres" not in text  # a CPU job asks no GPU (--gpus-per-node=0 is refused)
    array = script.parent.name  # the array's own folder holds the script; its tasks are <array>_0, <array>_1
    want = {f"{array}_0|COMPLETED", f"{array}_1|COMPLETED"}
    deadline = time.monotonic() + 30  # a task's result is written before SLURM has seen its end
    while not want <= set(jobs := cluster.run("sacct", "-X", "-n", "-P", "-o", "JobID,State").stdout.split()):
        assert time.monotonic() < deadline, jobs
        time.sleep(0.5)


def test_a_time_limit_checkpoints_requeues_and_resumes_to_the_uninterrupted_dictionary(sweeps):
    root, out = sweeps["limit"].root, sweeps["limit"].finish()
    assert sweeps["limit"].proc.returncode == 0, out[-3000:]
    logs = job_logs(root)
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs, logs[-3000:]
    assert logs.count("Starting with JobEnvironment") >= 2, logs[-3000:]  # requeued at least once
    assert "Traceback" not in logs, logs[logs.find("Traceback") - 2000 :][:4000]  # W&B's service was signalled too
    reference = dictionary(sweeps["array"].root)
    d = dictionary(root)
    assert d.config.steps == reference.config.steps == STEPS
    assert all(d.tensors[k].equal(reference.tensors[k]) for k in reference.tensors)


def test_an_operator_requeue_resumes_to_the_uninterrupted_dictionary(sweeps):
    root, out = sweeps["requeue"].root, sweeps["requeue"].finish()
    assert sweeps["requeue"].proc.returncode == 0, out[-3000:]
    logs = job_logs(root)
    assert "stopped by SIGTERM at step" in logs and re.search(rf"resumed at step \d+ of {STEPS}", logs), logs[-3000:]
    reference = dictionary(sweeps["array"].root)
    d = dictionary(root)
    assert all(d.tensors[k].equal(reference.tensors[k]) for k in reference.tensors)


def test_a_cancelled_job_ends_the_sweep_in_one_line_naming_it(sweeps):
    run = sweeps["cancel"]
    out = run.finish()
    # submitit asks sacct again after half the time since the submission (at most): the end is seen within that
    allowed = 30 + (run.cancelled_at - run.started_at) / 2
    assert run.proc.returncode == 2 and run.ended_at - run.cancelled_at < allowed, (allowed, out[-3000:])
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"error: SLURM job {run.job} ended CANCELLED before it finished"), last
    assert "run the same command again to resume it" in last
    assert "Traceback" not in out and "Traceback" not in job_logs(run.root), job_logs(run.root)[-3000:]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["hydra.launcher.cpus_per_task=8"], "it asks 1 node(s) with 8 CPUs (1 tasks x 8), 4096 MB and 0 GPUs each"),
        (["trainer=gpu"], "with 4 CPUs (1 tasks x 4), 16384 MB and 1 GPUs each; the nodes offer"),
        (["hydra.launcher.partition=gpu"], "partition gpu has no nodes (sinfo lists none)"),
    ],
    ids=["cpus", "gpu", "partition"],
)
def test_a_request_no_node_can_meet_is_refused_in_one_line_before_submission(cluster, tmp_path, args, says):
    run = Sweep(cluster, [*SMOKE, "logger=none", *args], tmp_path)
    out = run.finish(timeout=60)
    assert run.proc.returncode == 2 and says in out and "Traceback" not in out, out[-3000:]
    assert not list(tmp_path.glob("multirun/*/*/.submitit/*/*_submission.sh"))  # nothing was submitted


def test_gpu_requests_follow_the_trainer_in_the_sbatch_script(tmp_path):
    """The GPU commands cannot run here: the script submitit would write for them, from the same resources."""
    from submitit.slurm.slurm import _make_sbatch_string  # noqa: PLC0415

    from sae_sweep.train.slurm import resources  # noqa: PLC0415

    base = {"tasks_per_node": 4, "nodes": 1, "cpus_per_task": None, "gpus_per_node": None, "mem_gb": None}
    p = resources(base, "gpu", 4)
    text = _make_sbatch_string(command="x", folder=tmp_path, ntasks_per_node=p["tasks_per_node"],
                               gpus_per_node=p["gpus_per_node"], cpus_per_task=p["cpus_per_task"],
                               mem=f"{p['mem_gb']}GB")  # fmt: skip
    assert "--gpus-per-node=4" in text and "--ntasks-per-node=4" in text and "--cpus-per-task=4" in text
    assert "--mem=64GB" in text
    cpu = resources({**base, "tasks_per_node": 2}, "cpu", 2)  # trainer=ddp trainer.accelerator=cpu devices=2
    assert (cpu["gpus_per_node"], cpu["cpus_per_task"], cpu["mem_gb"]) == (None, 1, 8)
    kept = resources({**base, "cpus_per_task": 6, "mem_gb": 32}, "gpu", 4)  # set by the user: kept
    assert (kept["cpus_per_task"], kept["mem_gb"]) == (6, 32)
