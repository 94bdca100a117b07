"""The report folder under faults: analyses racing for it and an analysis killed halfway leave one whole report,
never a mix of two and never a half-written one."""

import contextlib
import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sae_sweep import store
from sae_sweep.files import atomic_folder
from sae_sweep.store import ArtifactStore

from ..conftest import REPO, save_dict

pytestmark = [pytest.mark.slow, pytest.mark.faults]


def _replace_at_the_same_time(final: str, barrier, label: str) -> None:
    """Fill a report folder, then swap it in at the moment the other process swaps its own. The swap's first rename
    (the old folder moved aside) is made slow, as on a loaded network disk, so that the two swaps overlap."""
    real_replace = os.replace

    def slow_replace(src, dst):
        real_replace(src, dst)
        if ".old-" in str(dst):
            time.sleep(0.5)

    store.os.replace = slow_replace  # this child process only
    with atomic_folder(Path(final), replace=True) as tmp:
        for k in range(20):
            (tmp / f"part{k}.txt").write_text(label)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=30)


def test_two_processes_replacing_one_folder_at_once_leave_one_whole_folder(tmp_path):
    final = tmp_path / "analysis"
    final.mkdir()
    (final / "part0.txt").write_text("old")
    # fork: the children only move files; a spawned one would import torch and lightning again (6 s each)
    ctx = multiprocessing.get_context("fork")
    for attempt in range(2):  # the swaps meet at a barrier; twice, so that their order can vary
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_replace_at_the_same_time, args=(str(final), barrier, n)) for n in "AB"]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0], attempt  # neither failed between its two renames
        labels = {p.read_text() for p in final.iterdir()}
        assert len(labels) == 1 and labels <= {"A", "B"} and len(list(final.iterdir())) == 20  # one whole folder
        assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]  # nothing left over


def analyze(root: Path, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "SAE_SWEEP_ROOT": str(root)}
    cmd = [sys.executable, str(REPO / "analyze.py"), "logger=none", "analysis.n_boot=50", "analysis.n_perm=50", *args]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    return subprocess.Popen(cmd, cwd=REPO, env=env, **pipes, **popen)


@pytest.fixture
def root(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    for J in (8, 16, 32):
        save_dict(store, J, 0)
    return tmp_path


def whole_report(out: Path) -> int:
    """Check that ``out`` is one report, and return its number of random baselines: the intro of report.md and
    the columns of every EMD table must agree on it (a mix of two runs with different n_random would not)."""
    text = (out / "report.md").read_text()
    n = int(text.split("Random baselines: ")[1].split(" pairs")[0])
    for table in out.glob("emd_J*.csv"):
        header = table.read_text().splitlines()[0].split(",")
        assert sum(col.startswith("rand") for col in header) == n, (table, header)
    for link in (part.split(")")[0] for part in text.split("](")[1:]):
        assert (out / link).is_file(), link
    return n


def test_two_analyses_writing_one_folder_at_once_leave_one_whole_report(root):
    procs = [analyze(root, f"analysis.n_random={n}") for n in (2, 3)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    assert whole_report(root / "analysis") in (2, 3)
    assert not list(root.glob(".analysis.tmp-*")) and not list(root.glob(".analysis.old-*"))  # nothing left over


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_an_analysis_killed_halfway_leaves_the_previous_report_whole(root):
    first = analyze(root, "analysis.n_random=2")
    assert first.wait(timeout=600) == 0, first.stdout.read()[-2000:]
    before = _digests(root / "analysis")
    proc = analyze(root, "analysis.n_random=3")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill it once it has written part of the new report
        written = [f for tmp in root.glob(".analysis.tmp-*") for f in tmp.iterdir()]
        if len(written) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "finished before it could be killed"
    assert _digests(root / "analysis") == before  # the old report, untouched
    assert whole_report(root / "analysis") == 2
    again = analyze(root, "analysis.n_random=3")
    assert again.wait(timeout=600) == 0
    assert whole_report(root / "analysis") == 3
