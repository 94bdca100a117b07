"""Faults injected for real: signals and kills to running jobs, racing processes. Nothing may be lost."""

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sae_sweep import DataError
from sae_sweep.dictionary import load_dictionary
from sae_sweep.store import ArtifactStore
from sae_sweep.train.gpt import load_gpt
from sae_sweep.train.runs import verify_checkpoint
from sae_sweep.train.sae import SAEConfig, SparseAutoencoder
from sae_sweep.train.sae_stage import write_with_export

from ..conftest import REPO, SMOKE, built_once, dictionary_config, fresh_root, run_at_once, run_train

pytestmark = [pytest.mark.slow, pytest.mark.faults]
SAE_TOKENS = 200_000  # 781 steps of 256: a few seconds past the first checkpoint (step 100), where the faults strike
SAE_ARGS = [*SMOKE, "logger=none", f"harvest.n_tokens={SAE_TOKENS}", "sae.dict_size=1024", "sae.ckpt_every=100"]
SAE_STEPS = SAE_TOKENS // 256
GPT_ARGS = [
    "stage=pretrain",
    *SMOKE,
    "logger=none",
    "pretrain.max_steps=200",
    "pretrain.ckpt_every=20",
    "pretrain.val_every=100",
]


def start(args: list[str], root, **popen) -> subprocess.Popen:
    env = {**os.environ, "SAE_SWEEP_ROOT": str(root)}
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def wait_for_checkpoint(root, pattern: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not list(root.glob(pattern)):
        assert proc.poll() is None, "the job ended before writing a checkpoint:\n" + proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process below ``pid``, read from /proc."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        children.setdefault(ppid, []).append((int(entry.name), cmd))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def end_all(proc: subprocess.Popen) -> None:
    """Kill what a failed test leaves running: the job and everything it started."""
    if proc.poll() is None:
        for pid, _ in descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def reference_sae(gpt_root, tmp_path_factory):
    """The dictionary an uninterrupted run of SAE_ARGS produces (trained once per test run)."""

    def train(folder: Path) -> None:
        proc = run_train(SAE_ARGS, fresh_root(gpt_root, folder))
        assert proc.returncode == 0, proc.stderr[-3000:]

    root = built_once(tmp_path_factory, "reference-sae", train) / "root"
    return load_dictionary(ArtifactStore(root / "store").get("sae-L2-J1024-s0").path)


def assert_whole_curves(metrics_csv: Path, last_step: int = SAE_STEPS) -> None:
    """The training curves of a resumed run cover every logged step once, from the first to the last."""
    with open(metrics_csv, newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert steps == sorted(set(steps)) and steps[0] < 20 and steps[-1] >= last_step - 20, steps


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    """Equal bit for bit, else fail with the largest gap.

    The SAE step is bitwise reproducible on CPU whatever the load and the thread count
    (``benchmarks/repro_under_load.py``: one digest idle and under 2, 4 and 6 busy processes, and with 1 or 2
    threads), and a resume restores the batches, weights, Adam state and counters exactly, so any gap is a bug.
    """
    assert a.keys() == b.keys()
    gap = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"resumed {what} differs from the uninterrupted run in {differ}, by up to {gap:.3g}"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_interrupted_sae_job_resumes_to_the_uninterrupted_result(gpt_root, tmp_path, reference_sae, sig):
    root = fresh_root(gpt_root, tmp_path)
    proc = start(SAE_ARGS, root)
    wait_for_checkpoint(root, "runs/sae-*/checkpoints/last.ckpt", proc)
    proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0]
    if sig == signal.SIGTERM:
        # A clean stop: the step is finished, a checkpoint written, and the status says "terminated", not "failed".
        assert proc.returncode == 143, output[-3000:]
        assert "stopped by SIGTERM at step" in output and "Rerun the same command to resume" in output, output[-3000:]
        (ckpt,) = root.glob("runs/sae-*/checkpoints/last.ckpt")
        step = int(output.split("stopped by SIGTERM at step ")[1].split(";")[0])
        assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == step
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not ArtifactStore(root / "store").names("sae-dictionary"), "finished before the signal:\n" + output[-3000:]
    again = run_train(SAE_ARGS, root)
    assert again.returncode == 0 and "resuming from" in again.stdout + again.stderr, again.stderr[-3000:]
    resumed = load_dictionary(ArtifactStore(root / "store").get("sae-L2-J1024-s0").path)
    assert_whole_curves(resumed.path / "metrics.csv")
    assert_same_tensors(resumed.tensors, reference_sae.tensors, "dictionary")


DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.devices=2"]
DDP_SAE_ARGS = [*SMOKE, "logger=none", "harvest.n_tokens=100000", "sae.dict_size=1024", "sae.ckpt_every=25", *DDP]
DDP_STEPS = 100000 // (256 * 2)  # each step takes one batch per process


def test_sigterm_under_ddp_checkpoints_and_resumes(gpt_root, tmp_path):
    """SIGTERM to the process group of a ddp_spawn job (as SLURM or scancel sends it): the main process survives it
    and waits, both workers finish the same step, last.ckpt is written at it, and the job exits 143; the same
    command again resumes there and finishes."""
    root = fresh_root(gpt_root, tmp_path)
    args = [*DDP_SAE_ARGS, "trainer.progress_bar=false"]
    proc = start(args, root, start_new_session=True)  # its own process group, signalled as a whole
    try:
        wait_for_checkpoint(root, "runs/sae-*/checkpoints/last.ckpt", proc)
        time.sleep(0.3)  # into the steps after the periodic checkpoint
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=120)[0]
    finally:
        end_all(proc)
    assert proc.returncode == 143, output[-3000:]
    assert "stopped by SIGTERM at step" in output and "Rerun the same command to resume" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    step = int(output.split("stopped by SIGTERM at step ")[1].split(";")[0])
    (ckpt,) = root.glob("runs/sae-*/checkpoints/last.ckpt")
    assert 0 < step < DDP_STEPS, output[-3000:]
    assert torch.load(verify_checkpoint(ckpt), map_location="cpu", weights_only=False)["global_step"] == step
    assert not ArtifactStore(root / "store").names("sae-dictionary")

    again = run_train(args, root)
    log = again.stdout + again.stderr
    assert again.returncode == 0 and "resuming from" in log and "Restored all states" in log, log[-3000:]
    resumed = load_dictionary(ArtifactStore(root / "store").get("sae-L2-J1024-s0").path)
    assert resumed.config.steps == DDP_STEPS
    assert_whole_curves(resumed.path / "metrics.csv", last_step=DDP_STEPS)


def test_killed_pretraining_resumes_to_the_uninterrupted_result(tmp_path):
    reference = run_train(GPT_ARGS, tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    root = tmp_path / "killed"
    proc = start(GPT_ARGS, root)
    wait_for_checkpoint(root, "runs/gpt-*/checkpoints/last.ckpt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not ArtifactStore(root / "store").names("model"), "pretraining finished before the kill"
    again = run_train(GPT_ARGS, root)
    assert again.returncode == 0 and "resuming from" in again.stdout + again.stderr, again.stderr[-3000:]
    a = load_gpt(ArtifactStore(tmp_path / "reference" / "store").get("gpt-embedded-s0").path).model.state_dict()
    resumed = ArtifactStore(root / "store").get("gpt-embedded-s0")
    assert_same_tensors(a, load_gpt(resumed.path).model.state_dict(), "GPT")
    # it counts every step, and the loss before training is not measured again (the resumed model is not at init)
    assert resumed.metadata["steps"] == 200 and resumed.metadata["val_loss_init"] is None


PREP = """
import sys
from sae_sweep.train.corpus import DataConfig
from sae_sweep.train.tokens import prepare
prepare(DataConfig(corpus="embedded", vocab_size=512, max_bytes=300000, val_fraction=0.2), sys.argv[1])
"""


def test_racing_token_preps_build_once_and_match_a_serial_run(tmp_path):
    script = tmp_path / "prep.py"
    script.write_text("import logging, sys\nlogging.basicConfig(level=logging.INFO, stream=sys.stdout)\n" + PREP)
    outs = run_at_once([str(script), str(tmp_path / "shared")], 4)
    assert "".join(outs).count("preparing tokens") == 1
    serial = subprocess.run([sys.executable, str(script), str(tmp_path / "serial")], capture_output=True, timeout=300)
    assert serial.returncode == 0
    (shared,) = (tmp_path / "shared" / "tokens").glob("embedded-*")
    (alone,) = (tmp_path / "serial" / "tokens").glob("embedded-*")
    assert shared.name == alone.name
    for name in ("train.bin", "val.bin", "tokenizer.json"):
        assert (shared / name).read_bytes() == (alone / name).read_bytes(), name
    assert not [p for p in (tmp_path / "shared" / "tokens").iterdir() if ".tmp-" in p.name]


def test_edited_checkpoint_dictionary_and_cache_are_named_and_refused(gpt_root, tmp_path):
    root = fresh_root(gpt_root, tmp_path)
    args = [*SMOKE, "logger=none", "sae.ckpt_every=20"]
    assert run_train(args, root).returncode == 0
    # A checkpoint edited after it was written: the resume refuses it, naming the file.
    (ckpt,) = root.glob("runs/sae-*/checkpoints/last.ckpt")
    # Make the run look unfinished, so that it would resume: no done.json, and its dictionary moved out of the store
    # (a version this run saved counts as its result).
    (ckpt.parent.parent / "done.json").unlink()
    saved = root / "store" / "sae-L2-J256-s0"
    saved.rename(root / "aside")
    with open(ckpt, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    proc = run_train(args, root)
    assert proc.returncode == 2 and f"checkpoint {ckpt} does not match the sha256" in proc.stdout + proc.stderr
    (root / "aside").rename(saved)
    # A truncated dictionary file: analysis names it and stops.
    art = ArtifactStore(root / "store").get("sae-L2-J256-s0")
    weights = art.path / "sae.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    env = {**os.environ, "SAE_SWEEP_ROOT": str(root)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "analyze.py"), "logger=none"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and f"{weights} does not match the sha256" in proc.stdout + proc.stderr
    # An edited activation cache: the SAE job names it instead of training on it.
    (acts,) = root.glob("cache/activations/L2-*/train.npy")
    with open(acts, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\xff\xff\xff\xff")
    proc = run_train([*args, "force=true"], root)
    assert proc.returncode == 2
    assert f"activation cache: file {acts} does not match the sha256" in proc.stdout + proc.stderr


def test_unreachable_wandb_server_does_not_fail_the_job(gpt_root, tmp_path):
    root = fresh_root(gpt_root, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env.update(SAE_SWEEP_ROOT=str(root), WANDB_BASE_URL="http://127.0.0.1:9", WANDB_API_KEY="x" * 40)
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *SMOKE, "logger=wandb"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "cannot be reached" in output and "wandb sync" in output
    assert ArtifactStore(root / "store").get("sae-L2-J256-s0").version == 0
    assert list(root.glob("runs/sae-*/wandb/offline-run-*"))


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MB tmpfs (needs root, as on CI and the dev machines); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_during_an_artifact_write_keeps_the_previous_version(small_disk):
    store = ArtifactStore(small_disk / "store")

    def writer(dict_size):
        sae = SparseAutoencoder(128, SAEConfig(dict_size=dict_size))
        config = dictionary_config(f"sae-L2-J{dict_size}-s0", d_in=128, dict_size=dict_size)
        return lambda folder: write_with_export(folder, sae, config, [0] * dict_size)

    store.save("sae-L2-J256-s0", "sae-dictionary", writer(256))  # about 0.4 MB: fits
    with pytest.raises(DataError, match=r"the disk is full: writing a new version of sae-L2-J256-s0 .* intact"):
        store.save("sae-L2-J256-s0", "sae-dictionary", writer(8192))  # about 12 MB: the disk fills mid-write
    survivor = store.get("sae-L2-J256-s0")  # verifies every sha256
    assert survivor.version == 0 and load_dictionary(survivor.path).dict_size == 256
    assert sorted(p.name for p in (small_disk / "store" / "sae-L2-J256-s0").iterdir()) == [".lock", "latest", "v0"]


def test_usr2_requeues_a_submitit_job_which_resumes_at_the_step_it_stopped(gpt_root, tmp_path, reference_sae):
    """The requeue path of hydra/launcher=slurm, run by the local executor of the same launcher plugin.

    Real: the multirun, submitit's job process and its USR2 handler, the launcher's checkpoint() (a
    DelayedSubmission of the same job, pickled), the exit with submitit's requeue status, the job started again from
    that pickle, our resume from last.ckpt. Not real: SLURM itself, whose part (`scontrol requeue`, then starting the
    job again) the local controller plays.
    """
    root = fresh_root(gpt_root, tmp_path)
    proc = start(["-m", "hydra/launcher=submitit_local", "+hydra.launcher.max_num_timeout=1", *SAE_ARGS], root)
    try:
        wait_for_checkpoint(root, "runs/sae-*/checkpoints/last.ckpt", proc)
        (job,) = [pid for pid, cmd in descendants(proc.pid) if "submitit.core._submit" in cmd]
        os.kill(job, signal.SIGUSR2)  # what SLURM sends signal_delay_s before the time limit
        output = proc.communicate(timeout=600)[0]
    finally:
        end_all(proc)
    assert proc.returncode == 0, output[-3000:]
    logs = "".join(p.read_text() for p in sorted(root.glob("multirun/*/*/.submitit/*/*_log.*")))
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs and "(1 remaining timeouts)" in logs, logs[-3000:]
    assert logs.count("Starting with JobEnvironment") == 2, logs[-3000:]  # the job ran twice: requeued once
    # The signal was held until the step ended and last.ckpt was written there; the requeued job resumed at that step.
    saved = re.search(r"saved \S+last\.ckpt at step (\d+); handing over to submitit", logs)
    assert saved, logs[-3000:]
    step = int(saved.group(1))
    assert 100 <= step < SAE_STEPS and "resuming from" in logs, logs[-3000:]
    assert f"resumed at step {step} of {SAE_STEPS}" in logs, logs[-3000:]
    d = load_dictionary(ArtifactStore(root / "store").get("sae-L2-J1024-s0").path)
    assert d.config.steps == SAE_STEPS
    assert_whole_curves(d.path / "metrics.csv")  # the rows before the requeue were kept, none logged twice
    assert_same_tensors(d.tensors, reference_sae.tensors, "dictionary")


def test_wandb_dying_mid_run_does_not_fail_the_job(gpt_root, tmp_path):
    """W&B's service process (wandb-core) is killed mid-training: every W&B call fails from then on."""
    root = fresh_root(gpt_root, tmp_path)
    args = [arg for arg in SAE_ARGS if arg != "logger=none"]  # the default logger: a real offline W&B run
    proc = start(args, root)
    try:
        wait_for_checkpoint(root, "runs/sae-*/checkpoints/last.ckpt", proc)
        deadline = time.time() + 60  # on a loaded machine the service may still be starting
        while not (core := [pid for pid, cmd in descendants(proc.pid) if "wandb-core" in cmd]):
            assert time.time() < deadline and proc.poll() is None, "no wandb-core process under the job"
            time.sleep(0.05)
        os.kill(core[0], signal.SIGKILL)
        output = proc.communicate(timeout=600)[0]
    finally:
        end_all(proc)
    assert proc.returncode == 0, output[-3000:]
    (run_dir,) = root.glob("runs/sae-*")
    (wandb_dir,) = run_dir.glob("wandb/offline-run-*")
    failed = re.search(r"W&B logging failed at step (\d+) while logging metrics \(ConnectionResetError", output)
    assert failed and output.count("W&B logging failed") == 1, output[-3000:]  # warned once, then W&B is off
    assert 100 <= int(failed.group(1)) < SAE_STEPS
    assert f"metrics continue in {run_dir / 'csv' / 'metrics.csv'}" in output
    assert f"run `wandb sync {wandb_dir}`" in output
    assert "Traceback" not in output, output[-3000:]
    d = load_dictionary(ArtifactStore(root / "store").get("sae-L2-J1024-s0").path)
    assert d.config.steps == SAE_STEPS
    assert_whole_curves(d.path / "metrics.csv")  # the CSV went on after W&B failed
