"""The command line fuzzed end to end: invalid overrides through train.py and analyze.py in real processes. Each one
exits with status 2 and one line, no traceback, and leaves no new file in the store (nor a report)."""

import os
import subprocess
import sys

import pytest
import torch

from sae_sweep.cli import unknown_choice
from sae_sweep.store import ArtifactStore

from ..conftest import CONF, REPO, fresh_root, save_dict

pytestmark = [pytest.mark.slow, pytest.mark.faults]

TRAIN = {  # a sample of each kind of bad input, one process each
    "wrong type": ["sae.dict_size=abc"],
    "wrong type (bool)": ["trainer.devices=true"],
    "out of range": ["sae.lr=-1"],
    "out of range (int)": ["sae.batch_size=0"],
    "unknown choice": ["sae.step=fast"],
    "unknown option of a group": ["trainer=tpu"],
    "unknown experiment": ["experiment=demoo"],
    "unknown option in a sweep": ["-m", "trainer=cpu,tpu"],
    "unknown key": ["sae.dictsize=8"],
    "inconsistent pair": ["harvest.n_tokens=100", "sae.batch_size=256"],
    "inconsistent pair (processes)": ["sae.resample_every=10", "trainer=ddp", "trainer.accelerator=cpu"],
    "no such GPT": ["gpt=gpt-nowhere"],
    "synthetic data with a GPT": ["data=synthetic", "gpt=untrained"],
    "too large to fit in memory": ["sae.dict_size=1000000000"],  # refused before the GPT is looked for
    "too large to fit in memory (synthetic data)": ["data=synthetic", "sae.dict_size=1000000000"],  # before generating
    "processes the strategy would re-launch": ["trainer.devices=2"],
    "top-k of more codes than features": ["sae.arch=topk", "sae.dict_size=16"],
    "an experiment's keys for other data": ["experiment=smoke", "data=synthetic"],
}
SAYS = {  # what the one line must say, where another refusal (no GPT in the store) would also exit 2
    "too large to fit in memory": "sae.dict_size=1000000000 at sae.batch_size=256 needs at least",
    "too large to fit in memory (synthetic data)": "d_in=128 from data.d_in",
    "processes the strategy would re-launch": "re-launches this script",
    "top-k of more codes than features": "sae.k=20 codes per input of sae.dict_size=16",
    "an experiment's keys for other data": "experiment=smoke sets data keys for its own data",
}
ANALYZE = {
    "wrong type": ["analysis.n_boot=many"],
    "out of range": ["analysis.threshold=2"],
    "out of range (level)": ["analysis.level=95"],
    "unknown option of a group": ["source=nope"],
    "unknown key": ["analysis.refrence=8"],
    "reference not among the sizes": ["analysis.reference=999"],
    "featured not among the sizes": ["analysis.featured=999"],
    "unknown variant": ["analysis.variant=nope"],
    "foreign SAEs without a folder": ["source=foreign"],
    "foreign SAEs in a missing folder": ["source=foreign", "source.path=/nonexistent/saes"],
    "a device torch does not know": ["analysis.device=tpu"],
    "CUDA where there is none": ["analysis.device=cuda"],
}


def run(script: str, args: list[str], root) -> subprocess.CompletedProcess:
    env = {**os.environ, "SAE_SWEEP_ROOT": str(root)}
    flags = [a for a in args if a == "-m"]  # Hydra's flags before the overrides
    cmd = [sys.executable, str(REPO / script), *flags, "logger=none", *[a for a in args if a != "-m"]]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "hydra" not in p.parts)


def assert_refused(proc: subprocess.CompletedProcess) -> None:
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if line.strip()]
    assert proc.returncode == 2, out[-2000:]
    assert len(lines) == 1 and "Traceback" not in out, out[-2000:]


@pytest.mark.parametrize("case", list(TRAIN), ids=list(TRAIN))
def test_train_refuses_bad_input_in_one_line_and_writes_nothing(case, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    save_dict(store, 8, 0)  # a store with something in it, which must stay as it is
    before = files(tmp_path)
    proc = run("train.py", TRAIN[case], tmp_path)
    assert_refused(proc)
    assert SAYS.get(case, "") in proc.stderr + proc.stdout
    assert files(tmp_path) == before


@pytest.mark.parametrize("args", list(ANALYZE.values()), ids=list(ANALYZE))
def test_analyze_refuses_bad_input_in_one_line_and_writes_nothing(args, tmp_path):
    if args == ["analysis.device=cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    store = ArtifactStore(tmp_path / "store")
    for J in (8, 16):
        save_dict(store, J, 0)
    before = files(tmp_path)
    assert_refused(run("analyze.py", args, tmp_path))
    assert files(tmp_path) == before  # no report, no cache


def test_unknown_choice_reads_only_group_options():
    assert unknown_choice(["trainer=gpu", "sae.dict_size=8", "gpt=anything", "hydra/launcher=joblib"], CONF) is None
    assert unknown_choice(["-m", "trainer=cpu,ddp", "experiment=choice(demo,smoke)", "~control"], CONF) is None
    assert unknown_choice(["+experiment=smoke"], CONF) is None
    assert unknown_choice(["trainer=cpu,tpu"], CONF).startswith("trainer=tpu: there is no such option")
    assert "conf/data/ has: embedded, openwebtext, synthetic, text_files" in unknown_choice(["data=owt"], CONF)


@pytest.fixture
def read_only(tmp_path):
    """A real read-only file system (a tmpfs mounted ro); skipped where this user may not mount one."""
    where = tmp_path / "ro"
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(where)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", str(where)], check=True)


@pytest.mark.parametrize("script", ["train.py", "analyze.py"])
def test_a_read_only_output_root_is_named_in_one_line(read_only, script):
    proc = run(script, ["experiment=smoke"] if script == "train.py" else [], read_only / "out")
    assert_refused(proc)
    assert "Read-only file system" in proc.stderr and "paths.root" in proc.stderr


def test_a_bad_value_late_in_a_sweep_is_refused_before_the_first_job_runs(gpt_root, tmp_path):
    root = fresh_root(gpt_root, tmp_path)
    before = files(root)
    proc = run("train.py", ["-m", "experiment=smoke", "sae.dict_size=64,0"], root)  # job #0 would train
    assert_refused(proc)
    assert "job #1 (" in proc.stderr and "sae.dict_size must be a positive integer, got 0" in proc.stderr
    assert files(root) == before  # job #0 did not run: no activations, no run folder, no dictionary
    twice = run("train.py", ["-m", "experiment=smoke", "sae.dict_size=24", "sae.seed=0,0"], root)
    assert_refused(twice)  # before: the first trained, the second found its run folder in use and the sweep failed
    assert "jobs #0 and #1 of the sweep are the same job (" in twice.stderr and "listed twice" in twice.stderr
    assert files(root) == before
