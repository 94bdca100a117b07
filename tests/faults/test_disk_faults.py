"""A full disk, for real (a small tmpfs), while the activation cache or a checkpoint is written: the job ends with one
clear line and exit status 2, nothing half-written is left where a later run would read it, and the products made
before stay intact and trusted."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from sae_sweep.activations import open_activations
from sae_sweep.store import ArtifactStore
from sae_sweep.train.runs import verify_checkpoint

from ..conftest import REPO, SMOKE

pytestmark = [pytest.mark.slow, pytest.mark.faults]


@pytest.fixture
def small_root(gpt_root, tmp_path):
    """A paths.root on a real 12 MB tmpfs holding the smoke GPT and its token cache (about 1 MB together)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    for part in ("store", "cache"):
        shutil.copytree(gpt_root / part, mount / part)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def train(root, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SAE_SWEEP_ROOT": str(root)}
    cmd = [sys.executable, str(REPO / "train.py"), *SMOKE, "logger=none", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def one_error_line(proc: subprocess.CompletedProcess, needle: str) -> str:
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out and len(errors) == 1 and needle in errors[0], out[-3000:]
    return errors[0]


def leftovers(root) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".tmp-" in p.name]


def test_full_disk_while_harvesting_leaves_no_cache_and_the_rest_intact(small_root):
    tokens_before = sorted(p.name for p in (small_root / "cache" / "tokens").iterdir())
    proc = train(small_root, "harvest.n_tokens=100000")  # 100k x 128 float16 = 25.6 MB: the disk fills mid-write
    line = one_error_line(proc, "the disk is full: building")
    assert "activations" in line and "nothing of it was kept" in line
    assert not list((small_root / "cache" / "activations").glob("*/meta.json"))  # no cache a later run would trust
    assert leftovers(small_root) == []
    assert sorted(p.name for p in (small_root / "cache" / "tokens").iterdir()) == tokens_before
    ArtifactStore(small_root / "store").get("gpt-embedded-s0")  # the GPT still verifies, every sha256
    assert train(small_root, "harvest.n_tokens=4096", "sae.dict_size=64").returncode == 0  # and still works


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint_and_the_cache(small_root):
    # 24k activations (6 MB) fit, and so does one J=1024 checkpoint (weights and Adam moments, 3 MB); the second
    # is written beside the first before it replaces it, and finds the disk full
    proc = train(small_root, "sae.dict_size=1024", "sae.ckpt_every=5")
    one_error_line(proc, "the disk is full: writing checkpoint")
    (run,) = [p for p in (small_root / "runs").iterdir() if not p.name.startswith(".")]  # .lock: the owner's
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]  # no torn checkpoint
    last = verify_checkpoint(run / "checkpoints" / "last.ckpt")  # the previous one, still whole and trusted
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 5
    (cache,) = [p for p in (small_root / "cache" / "activations").iterdir() if p.is_dir()]
    open_activations(cache)  # the activation cache built before still verifies
    assert not ArtifactStore(small_root / "store").names("sae-dictionary")
    assert leftovers(small_root) == []
