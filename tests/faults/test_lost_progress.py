"""No lost progress and no dead end: checkpoints whose digest goes with them, one owner per run folder, results
saved once, damaged caches rebuilt, and what killed writers left removed. Each injected for real."""

import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from sae_sweep import DataError
from sae_sweep.files import atomic_folder, build_once, temp_path
from sae_sweep.store import ArtifactStore
from sae_sweep.train import runs
from sae_sweep.train.runs import AtomicCheckpointIO, resolve_checkpoint, verify_checkpoint

from ..conftest import SMOKE, fresh_root, run_train
from .test_faults import end_all, start, wait_for_checkpoint

pytestmark = pytest.mark.faults


class Killed(Exception):
    """Stands for a kill at the point where it is raised."""


def kill_at(monkeypatch, module, name: str, call: int):
    """Make the ``call``-th call of ``module.name`` raise Killed (the process dies there), the others go through."""
    real, seen = getattr(module, name), []

    def fake(*args, **kwargs):
        seen.append(1)
        if len(seen) == call:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, fake)


@pytest.mark.parametrize(
    "where, call, resumes_at",
    [("atomic_write_text", 1, 1), ("replace", 2, 1), ("atomic_write_text", 2, 2)],
    ids=["before-the-digest", "before-the-rename", "after-the-rename"],  # os.replace's 1st call: the digest's own
)
def test_a_checkpoint_killed_mid_save_leaves_one_that_resumes(tmp_path, monkeypatch, where, call, resumes_at):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, ckpt)
    kill_at(monkeypatch, runs.os if where == "replace" else runs, where, call)
    with pytest.raises(Killed):
        io.save_checkpoint({"global_step": 2}, ckpt)
    monkeypatch.undo()
    # The old checkpoint until the new one is renamed into place, then the new one: either way accepted.
    assert torch.load(resolve_checkpoint("last", tmp_path), weights_only=False)["global_step"] == resumes_at


def test_a_checkpoint_without_its_digest_is_refused_unless_named(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, ckpt)
    ckpt.with_name("last.ckpt.sha256").unlink()
    with pytest.raises(DataError, match=r"has no last\.ckpt\.sha256 beside it.*ckpt_path="):
        resolve_checkpoint("last", tmp_path)
    assert verify_checkpoint(ckpt, required=False) == resolve_checkpoint(str(ckpt), tmp_path) == ckpt


def test_a_build_without_its_marker_is_rebuilt_and_says_so(tmp_path, caplog):
    final = tmp_path / "cache" / "L2-abc"
    final.mkdir(parents=True)
    (final / "train.npy").write_text("half of something")  # the marker (meta.json) is gone
    assert build_once(final, lambda d: (d / "meta.json").write_text("{}"), ready="meta.json")
    assert sorted(p.name for p in final.iterdir()) == ["meta.json"] and "building it again" in caplog.text
    assert not build_once(final, lambda d: None, ready="meta.json")  # whole now: reused


def test_what_a_killed_writer_left_is_removed_and_a_live_ones_kept(tmp_path):
    final = tmp_path / "store" / "product"
    final.parent.mkdir(parents=True)
    code = (
        "import sys, time; from pathlib import Path; from sae_sweep.files import atomic_folder\n"
        "with atomic_folder(Path(sys.argv[1])) as tmp:\n"
        "    (tmp / 'big.bin').write_bytes(b'0' * 1000); print(tmp, flush=True); time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(final)], stdout=subprocess.PIPE, text=True)
    left = writer.stdout.readline().strip()
    writer.send_signal(signal.SIGKILL)  # killed mid-write: its temporary folder stays
    writer.wait()
    live = temp_path(final)  # this process's: alive
    live.mkdir()
    elsewhere = final.parent / f".product.tmp-not-{socket.gethostname()}-1-abcdef12"  # another host's
    elsewhere.mkdir()
    with atomic_folder(final) as tmp:
        (tmp / "x").write_text("done")
    assert not os.path.exists(left) and live.exists() and elsewhere.exists() and (final / "x").exists()


def test_a_result_saved_before_its_marker_is_not_saved_again(gpt_root, tmp_path):
    """A job stopped between saving its dictionary and writing done.json (the state a kill there leaves)."""
    root = fresh_root(gpt_root, tmp_path)
    args = [*SMOKE, "logger=none"]
    assert run_train(args, root).returncode == 0
    (done,) = root.glob("runs/sae-*/done.json")
    done.unlink()
    again = run_train(args, root)
    assert again.returncode == 0 and "already saved sae-L2-J256-s0:v0" in again.stdout + again.stderr
    assert ArtifactStore(root / "store").get("sae-L2-J256-s0").version == 0 and done.exists()


def test_one_job_per_run_folder_and_a_dead_owners_folder_is_taken_over(gpt_root, tmp_path):
    root = fresh_root(gpt_root, tmp_path)
    args = [*SMOKE, "logger=none", "harvest.n_tokens=200000", "sae.dict_size=1024", "sae.ckpt_every=50"]
    first = start(args, root)
    try:
        wait_for_checkpoint(root, "runs/sae-*/checkpoints/last.ckpt", first)
        first.send_signal(signal.SIGSTOP)  # the owner alive but held: it cannot finish while the second one asks
        second = run_train(args, root)
        said = second.stdout + second.stderr
        assert second.returncode == 2 and "is in use by process" in said and str(first.pid) in said, said[-2000:]
        assert socket.gethostname() in said and "Traceback" not in said
        first.send_signal(signal.SIGKILL)  # the owner dies: its lock goes with it
        first.wait()
    finally:
        end_all(first)
    third = run_train(args, root)
    assert third.returncode == 0 and "resuming from" in third.stdout + third.stderr, third.stderr[-2000:]
    assert ArtifactStore(root / "store").get("sae-L2-J1024-s0").version == 0
    assert not list(root.glob("runs/.*owner.json"))  # released at the end
