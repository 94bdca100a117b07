"""Shared test set-up: offline W&B and HF, a tiny corpus on disk, and the real composed config."""

import compileall
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from filelock import FileLock
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from sae_sweep.dictionary import DICTIONARY_TYPE, DictionaryConfig, dictionary_name

# Never reach a server from tests: W&B writes offline runs, HF libraries stay offline.
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def pytest_configure(config) -> None:
    """Byte-compile the package and the installed stack once per test run, on every core. The tests start train.py
    and analyze.py in subprocesses hundreds of times, and where PYTHONDONTWRITEBYTECODE is set (as on this project's
    machines and CI) each start would compile what it imports anew: 1.2 s of the 5.8 s that importing sae_sweep's
    training and analysis modules takes (measured on the 2-core machine, 2026-12-07). The README's test command
    installs with ``pip --no-compile``: pip compiles site-packages on one core (about 65 s of its 94 s set-up here,
    2026-12-08), this on all of them (about 18 s; a second run only compares timestamps). In the main process only:
    pytest-xdist starts its workers after it, and they find the files written."""
    if not hasattr(config, "workerinput"):  # an xdist worker has it
        compileall.compile_dir(REPO / "sae_sweep", quiet=1)
        # quiet=2: a few files of the stack are for newer Pythons (torch's py312_intrinsics) and never imported here
        compileall.compile_dir(sysconfig.get_paths()["purelib"], quiet=2, workers=0)


@pytest.fixture(autouse=True)
def own_wandb_service(monkeypatch) -> None:
    """Every process a test starts runs its own W&B service, as a user's command does. A test that used W&B in this
    process leaves its service's address in WANDB_SERVICE (W&B sets it for child processes to share the service),
    and a train.py started later would hand its run to that service, which writes the run's file when it pleases:
    seen 60 s after the job had exited, on a file a test then read (2026-12-08)."""
    monkeypatch.delenv("WANDB_SERVICE", raising=False)


def exit_recorded(paths: list[Path], timeout: float = 60.0) -> list[Path]:
    """``paths`` (W&B ``.wandb`` files), once each holds its run's exit record. wandb-core writes the file in a
    process of its own, in blocks, and may still be writing it when the run has finished, or even when the process
    that ran it has exited (seen on the loaded 2-core machine): a test that reads the file at once reads a part."""
    from sae_sweep.wandb_records import records  # noqa: PLC0415 - loads W&B's protobufs

    def ended(path: Path) -> bool:
        return any(r.WhichOneof("record_type") == "exit" for r in records(path))

    deadline = time.monotonic() + timeout
    while not all(ended(p) for p in paths) and time.monotonic() < deadline:
        time.sleep(0.2)
    return paths


# A small real text with repetition (so BPE learns merges) and non-ASCII characters (so round trips are tested).
SAMPLE = (
    "def add(a, b):\n    return a + b\n\n"
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n"
    "# café, naïve, 東京, emoji 🙂 and tabs\t\tend\n"
)


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """Thirty small text files: enough documents for a document-level validation split."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(30):
        (folder / f"doc{i:02d}.txt").write_text(SAMPLE * (5 + i % 3) + f"doc number {i}\n")
    return folder


def compose(overrides: list[str]):
    """The real train.yaml, composed with Hydra exactly as train.py composes it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def run_train(args: list[str], root: Path, timeout: float = 600, **kw):
    """Run train.py in a subprocess, as a user would, with outputs under ``root``."""
    env = {**os.environ, "SAE_SWEEP_ROOT": str(root)}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=kw.pop("cwd", REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def run_train_on_a_terminal(args: list[str], root: Path, timeout: float = 600):
    """``run_train`` with a pseudo-terminal for its output (util-linux ``script``), as a user at a shell sees it."""
    cmd = shlex.join([sys.executable, str(REPO / "train.py"), *args])
    env = {**os.environ, "SAE_SWEEP_ROOT": str(root)}
    return subprocess.run(
        ["script", "-qec", cmd, "/dev/null"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def run_analyze(args: list[str], root: Path, timeout: float = 300):
    """Run analyze.py in a subprocess, as a user would, with outputs under ``root``."""
    env = {**os.environ, "SAE_SWEEP_ROOT": str(root)}
    cmd = [sys.executable, str(REPO / "analyze.py"), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


SMOKE = ["experiment=smoke"]


def run_at_once(args: list[str], n: int, timeout: float = 300) -> list[str]:
    """Start ``n`` copies of ``python args...`` together and wait for all; each must exit 0. Returns their outputs."""
    procs = [
        subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(n)
    ]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return outs


def _tiny_sae():
    from sae_sweep.train.sae import SAEConfig  # noqa: PLC0415

    return SAEConfig(dict_size=8, batch_size=8, seed=0, data_seed=0, ckpt_every=6, log_every=2)


TINY_SAE = _tiny_sae()  # a few-second SAE run on (512, 4) activations: 64 steps a pass, a checkpoint every 6


class Killed(Exception):
    """Raised by KillAt: an in-process stand-in for a job killed mid-run (its last checkpoint stays on disk)."""


class KillAt(pl.Callback):
    """A Lightning callback that raises Killed before the first Lightning batch that starts at step ``step`` or
    later (an SAE batch holds up to ``sae.steps_per_batch`` steps)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise Killed


def kill_at_first_checkpoint(
    args: list[str], root: Path, runs: str = "runs/*", timeout: float = 300, linger: float = 0.0
) -> None:
    """Start train.py with ``args`` under ``root``, SIGKILL it ``linger`` seconds after a run folder matching ``runs``
    has a last.ckpt, and check that it was killed mid-run: that checkpoint is there and no dictionary reached the
    store."""
    env = {**os.environ, "SAE_SWEEP_ROOT": str(root)}
    cmd = [sys.executable, str(REPO / "train.py"), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not list(root.glob(f"{runs}/checkpoints/last.ckpt")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(linger)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(root.glob(f"{runs}/checkpoints/last.ckpt")), "no checkpoint was written before the kill"
    assert not list(root.glob("store/*/v*/sae.safetensors")), "the job finished before it could be killed"


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder ``build(folder)`` fills, built once per test run: under pytest-xdist the first worker to ask builds
    it in the run's shared temporary folder while the others wait on a file lock, then all read it (a session
    fixture alone is built once per worker: the smoke GPT, the fuzzed sweep and the reference SAE were each built
    twice on 2 cores). A build that failed leaves no ``.done`` marker, and the next to ask builds again."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-of-<user>/pytest-<n>/: every worker's basetemp lies under it
    folder, done = base / f"built-{name}", base / f"built-{name}.done"  # the marker beside it: copies leave it
    with FileLock(f"{folder}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def gpt_root(tmp_path_factory):
    """A paths.root whose store holds one smoke GPT (trained once per test run). Read-only: ``fresh_root`` copies
    it for a test that writes."""

    def pretrain(root: Path) -> None:
        proc = run_train(["stage=pretrain", *SMOKE, "logger=none"], root)
        assert proc.returncode == 0, proc.stderr[-3000:]

    return built_once(tmp_path_factory, "gpt", pretrain)


def fresh_root(gpt_root: Path, tmp_path: Path, name: str = "root") -> Path:
    """A new paths.root that starts with the smoke GPT (and its token cache) already in place."""
    root = tmp_path / name
    shutil.copytree(gpt_root, root)
    return root


def dictionary_config(name: str = "sae-L2-J64-s0", **fields) -> DictionaryConfig:
    """A complete config.json schema for hand-made dictionaries: the fields a test names, the rest plausible."""
    from sae_sweep.train.harvest import HarvestConfig  # noqa: PLC0415
    from sae_sweep.train.sae import SAEConfig  # noqa: PLC0415

    values = {
        "name": name,
        "variant": "",
        "d_in": 16,
        "layer": 2,
        "dict_size": 64,
        "seed": 0,
        "l1_coeff": 1e-3,
        "sae": SAEConfig(dict_size=fields.get("dict_size", 64), seed=fields.get("seed", 0)).to_dict(),
        "harvest": {**HarvestConfig().__dict__, "n_val_tokens": 1000},
        "gpt": {"artifact": "gpt-embedded-s0:v0", "digest": "0" * 64, "val_loss": 4.25},
        "synthetic": None,
        "activations": {"key": "L2-N1000-test", "digest": "0" * 64, "n_tokens": 1000},
        "steps": 1,
        "n_resampled": 0,
        "run_id": f"{name}-test",
        "metrics": {"val/fvu": 0.1, "val/l0": 5.0, "val/dead_fraction": 0.0, "val/mse": 0.01},
        "training": {"until": "converged", "converged": True, "converged_at_step": 1, "activations_seen": 256},
    }
    return DictionaryConfig(**{**values, **fields})


def save_dict(
    store,
    J: int,
    seed: int,
    d_in: int = 16,
    layer: int = 2,
    decoder=None,
    variant="",
    counts=None,
    extra: dict | None = None,
    files: dict | None = None,
):
    """Save a hand-made dictionary of size J (decoder (d_in, J) if given, else a seeded orthogonal one) to ``store``;
    ``files``: more files for its folder (name -> source path), e.g. a snapshots.safetensors."""
    from sae_sweep.train.sae import SAEConfig, SparseAutoencoder  # noqa: PLC0415
    from sae_sweep.train.sae_stage import write_with_export  # noqa: PLC0415

    sae = SparseAutoencoder(d_in, SAEConfig(dict_size=J, seed=seed))
    if decoder is not None:
        with torch.no_grad():
            sae.decoder.copy_(torch.as_tensor(decoder, dtype=torch.float32))
    name = dictionary_name(layer, J, seed, variant)
    config = dictionary_config(name, variant=variant, d_in=d_in, layer=layer, dict_size=J, seed=seed, **(extra or {}))
    counts = np.ones(J, dtype=np.int64) if counts is None else counts
    write = lambda f: write_with_export(f, sae, config, counts, files)  # noqa: E731 - as the SAE stage saves one
    return store.save(name, DICTIONARY_TYPE, write, config.__dict__)


class LinkingApi:
    """A stand-in of wandb.Api on which every run and artifact exists: it records the links made."""

    default_entity = "me"

    def __init__(self):
        self.links = []

    def artifact(self, path):
        return path

    def run(self, path):
        links = self.links

        class Run:
            def use_artifact(self, artifact):
                links.append((path, artifact))

        return Run()
