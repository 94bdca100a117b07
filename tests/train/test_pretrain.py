"""Pretraining through the real entry point, in subprocesses, as a user runs it."""

import time

import pytest

from sae_sweep.store import ArtifactStore
from sae_sweep.train.gpt import load_gpt

from ..conftest import run_train

pytestmark = pytest.mark.slow
SMOKE = ["stage=pretrain", "experiment=smoke"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke pretrain with the default logger (a real offline W&B run), shared by the checks below."""
    root = tmp_path_factory.mktemp("smoke")
    proc = run_train(SMOKE, root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, proc


def test_smoke_pretrain_leaves_a_loadable_model_that_learned(smoke_run):
    root, proc = smoke_run
    art = ArtifactStore(root / "store").get("gpt-embedded-s0")
    assert art.type == "model" and art.version == 0
    gpt = load_gpt(art.path)
    assert gpt.model.config.n_layer == 6 and gpt.model.config.block_size == 64
    assert gpt.model.config.vocab_size == gpt.tokenizer.vocab_size == 512
    train = gpt.config["train"]
    assert train["steps"] == 30
    assert train["val_loss"] < train["val_loss_init"] - 0.1  # it learned something in 30 steps
    assert gpt.data["key"] == art.metadata["data_key"]
    text = "def f(x):\n    return x\n"
    assert gpt.tokenizer.decode(gpt.tokenizer.encode(text)) == text


def test_smoke_pretrain_logs_metrics_and_an_offline_wandb_run(smoke_run):
    root, proc = smoke_run
    (run_dir,) = [p for p in (root / "runs").iterdir() if not p.name.startswith(".")]  # .lock: the owner's
    metrics = (run_dir / "csv" / "metrics.csv").read_text()
    assert "train/loss" in metrics and "val/loss" in metrics
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    assert "wandb sync" in proc.stdout + proc.stderr


def test_rerun_of_finished_job_reuses_it(smoke_run):
    root, _ = smoke_run
    t0 = time.perf_counter()
    proc = run_train([*SMOKE, "logger=none"], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already finished as gpt-embedded-s0:v0" in proc.stdout + proc.stderr
    assert ArtifactStore(root / "store").get("gpt-embedded-s0").version == 0
    assert time.perf_counter() - t0 < 30


def test_force_trains_a_new_version(smoke_run):
    root, _ = smoke_run
    proc = run_train([*SMOKE, "logger=none", "force=true"], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ArtifactStore(root / "store").get("gpt-embedded-s0").version == 1


@pytest.mark.parametrize(
    "args, needle",
    [
        (["pretrain.lrr=1"], "pretrain.lrr"),
        (["+pretrain.lrr=1"], "unknown key(s) ['lrr']"),
        (["data=text_files", "data.paths=[does/not/exist/*.txt]"], "no file matches 'does/not/exist/*.txt'"),
        (["model.block_size=100000"], "fewer than one block of 100000"),
    ],
)
def test_bad_input_ends_at_once_with_a_clear_message(tmp_path, args, needle):
    t0 = time.perf_counter()
    proc = run_train([*SMOKE, "logger=none", *args], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and needle in out, out[-2000:]
    assert "Traceback" not in out
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "runs").exists()  # no training started


def test_help_lists_the_groups(tmp_path):
    proc = run_train(["--help"], tmp_path)
    assert proc.returncode == 0
    for group in ("data:", "model:", "trainer:", "logger:", "experiment:", "smoke", "text_files"):
        assert group in proc.stdout
