"""train.py and analyze.py as a user runs them: documented overrides work, and a value that conflicts with another
is refused before any work, with one line naming the keys and the fix, exit status 2, and nothing written."""

import pytest

from sae_sweep.store import ArtifactStore

from .conftest import REPO, run_analyze, run_train, save_dict


def _written(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "hydra" not in p.parts)


def test_train_refuses_fewer_activations_than_one_batch_before_any_work(tmp_path):
    proc = run_train(["harvest.n_tokens=100", "sae.batch_size=256", "logger=none"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert "harvest.n_tokens=100 is fewer than one step's batch of 256" in out and "raise harvest.n_tokens" in out
    assert "Traceback" not in out
    assert _written(tmp_path) == []  # no token cache, no activations, no run folder


def test_train_counts_every_process_in_the_batch(tmp_path):
    args = ["harvest.n_tokens=300", "sae.batch_size=256", "trainer=ddp", "trainer.accelerator=cpu", "logger=none"]
    proc = run_train(args, tmp_path)
    assert proc.returncode == 2 and "batch of 512 activations (sae.batch_size=256 x 2 processes)" in proc.stdout
    assert _written(tmp_path) == []


def test_analyze_documented_overrides_compose():
    proc = run_analyze(["analysis.n_boot=100", "analysis.controls=false", "--cfg", "job"], REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "n_boot: 100" in proc.stdout and "controls: false" in proc.stdout


@pytest.mark.slow  # a whole analysis (in process or a subprocess): out of the inner loop
def test_analyze_refuses_a_reference_size_that_is_not_there_and_writes_no_report(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    for J in (8, 16):
        save_dict(store, J, 0)
    proc = run_analyze(["analysis.reference=999", "logger=none"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "analysis.reference=999 is not among the dictionary sizes [8, 16]" in out
    assert "Traceback" not in out and not (tmp_path / "analysis").exists()


def test_a_slurm_job_that_ended_without_its_result_is_one_line_naming_it():
    from sae_sweep.cli import job_ended  # noqa: PLC0415

    message = (  # submitit's UncompletedJobError, as it words it
        "Job 12_1 (task: 0) with path /r/multirun/d/t/.submitit/12_1/12_1_0_result.pkl\n"
        "has not produced any output (state: CANCELLED by 0)\nError stream produced:\n----------------------\n..."
    )
    line = job_ended(message)
    assert "\n" not in line and line.startswith("SLURM job 12_1 ended CANCELLED before it finished")
    assert "logs in /r/multirun/d/t/.submitit/12_1)" in line and "run the same command again" in line


def test_ctrl_c_ends_an_entry_point_in_one_line_saying_what_was_kept(capsys, monkeypatch):
    """What Hydra lets through on Ctrl-C (HYDRA_FULL_ERROR=1, as cli.run sets it): KeyboardInterrupt from the job."""
    from sae_sweep import cli  # noqa: PLC0415

    def main():
        raise KeyboardInterrupt

    monkeypatch.setattr("sys.argv", ["analyze.py"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as ended:
        cli.run(main, REPO / "conf", kept=": the report folder from before is as it was")
    err = capsys.readouterr().err
    assert ended.value.code == 130 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("interrupted (Ctrl-C): nothing half-written") and err.endswith("is as it was\n")
