"""benchmarks/gpu_check.py, the GPU check of issue 36, on the CPU: its guard, its arguments, its plan, its report,
its time limits and its failures. Nothing here needs a GPU; the GPU run itself is the script's job."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gc = load("gpu_check")


def make_check(tmp_path: Path, *extra: str):
    args = gc.parse_args(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), *extra])
    check = gc.Check(args)
    check.logs.mkdir(parents=True, exist_ok=True)
    return check


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# ------------------------------------------------------------------------------------------------ the guard


@pytest.mark.skipif(torch.cuda.is_available(), reason="the guard is for machines without CUDA")
def test_without_cuda_it_refuses_in_one_line_with_status_2(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--no-install", "--work", str(tmp_path / "work")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: refused: no CUDA device"), proc.stderr
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["status"] == "refused" and report["exit_code"] == 2
    assert report["steps"]["env"]["metrics"]["cuda"]["cuda_available"] is False
    assert not (tmp_path / "work").exists()  # nothing ran


# ------------------------------------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "env,bogus"], "unknown step"),
        (["--cap", "sweep=abc"], "--cap"),
        (["--cap", "nosuch=10"], "--cap"),
        (["--budget-s", "5"], "--budget-s"),
        (["--pretrain-steps", "10"], "--pretrain-steps"),
        (["--sweep-jobs", "0"], "--sweep-jobs"),
        (["--logger", "tensorboard"], "--logger"),
    ],
)
def test_bad_arguments_stop_with_status_2_and_say_which(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        gc.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_arguments_defaults_and_parsing():
    args = gc.parse_args(
        ["--steps", "sweep,analyze", "--cap", "sweep=90", "--budget-s", "300", "--sweep-override", "sae.step=dense"]
    )
    assert args.steps == ["env", "sweep", "analyze"]  # env always runs first
    assert args.cap == {"sweep": 90.0} and args.budget_s == 300 and args.sweep_override == ["sae.step=dense"]
    default = gc.parse_args([])
    assert default.steps == list(gc.STEPS) and default.budget_s == 230 and default.sweep_jobs == 6
    assert default.pretrain_steps == 800 and default.logger == "auto"


def test_the_plan_runs_the_gpu_paths_and_their_cpu_twins_for_tests(tmp_path, capsys):
    assert gc.main(["--dry-run", "--work", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert "smoke/gpu:" in out and "stage=pretrain experiment=smoke trainer=gpu" in out
    assert "smoke/ddp:" in out and "trainer=ddp trainer.devices=1" in out
    assert out.count("smoke/ddp:") == 1  # the pretraining; an SAE only with --ddp-sae
    assert "pretrain.max_steps=800 trainer=gpu" in out
    assert "-m experiment=demo trainer=gpu hydra.launcher.n_jobs=6" in out
    assert "analyze.py analysis.device=cuda" in out
    assert "gpu_kernels.py --device cuda" in out
    check = make_check(tmp_path, "--tiny", "--ddp-sae")
    check.device = "cpu"
    lanes = gc.plan(check)
    assert [c.label for c in lanes["smoke"]["ddp"]] == ["pretrain", "sae"]
    ddp = " ".join(lanes["smoke"]["ddp"][0].argv)
    assert "trainer=ddp trainer.devices=1 trainer.accelerator=cpu trainer.precision=32-true" in ddp
    assert "trainer=cpu" in " ".join(lanes["sweep"]["gpu"][0].argv) and "sae.dict_size=256,512" in " ".join(
        lanes["sweep"]["gpu"][0].argv
    )
    assert lanes["analyze"]["gpu"][0].root == lanes["sweep"]["gpu"][0].root  # the analysis reads the sweep's store


# ------------------------------------------------------------------------------------------------ wheels


def test_only_the_wheels_the_image_lacks_are_installed(tmp_path):
    folder = tmp_path / "ifneeded"
    folder.mkdir()
    for name in (
        "protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl",
        "typing_extensions-4.16.0-py3-none-any.whl",
        "click-8.5.1-py3-none-any.whl",
        "zipp-3.20.0-py3-none-any.whl",
    ):
        (folder / name).write_bytes(b"")
    (folder / "needs.json").write_text(
        json.dumps(
            {
                "protobuf": [["5", "6"], ["6.30", "7"], ["7.34", "8"]],
                "typing_extensions": [["4.16", None]],
                "click": [["8.2", None]],
            }
        )
    )
    image = {"protobuf": "6.29.1", "typing_extensions": "4.16.0", "click": None, "zipp": "3.21.0"}
    extra, kept = gc.needed_extras(folder, image.get)
    assert sorted(p.name.split("-")[0] for p in extra) == ["click", "protobuf"]  # missing, and a version wandb refuses
    assert kept == {"typing_extensions": "4.16.0", "zipp": "3.21.0"}  # no rule: at least the wheel's own version
    image |= {"protobuf": "5.29.3", "click": "8.2.0"}
    assert gc.needed_extras(folder, image.get)[0] == []
    assert gc.acceptable("7.34.0", [["7.34", "8"]]) and not gc.acceptable("8.0.1", [["7.34", "8"]])


# ------------------------------------------------------------------------------------------------ time limits


def test_a_command_past_its_deadline_is_killed_with_its_process_group(tmp_path):
    stop = gc.threading.Event()
    lanes = {
        "slow": [
            gc.Command(
                "sleep",
                py(
                    "import subprocess, sys; subprocess.run([sys.executable, '-c', "
                    "'import time; time.sleep(60)']); print('never')"
                ),
            ),
            gc.Command("after", py("print('never either')")),
        ],
        "stubborn": [
            gc.Command(
                "ignores-term",
                py(
                    "import signal, time; signal.signal(signal.SIGTERM, "
                    "signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
                ),
            )
        ],
        "quick": [gc.Command("ok", py("print('done')"))],
    }
    t0 = time.monotonic()
    done = gc.run_lanes(lanes, dict(os.environ), time.monotonic() + 1.5, tmp_path, stop, grace=0.5)
    assert time.monotonic() - t0 < 15
    assert done["slow"][0].killed and done["slow"][0].rc != 0 and len(done["slow"]) == 1  # "after" never ran
    assert done["stubborn"][0].killed and done["stubborn"][0].rc == -9  # SIGKILL after the grace
    assert done["quick"][0].rc == 0 and not done["quick"][0].killed
    assert "done" in done["quick"][0].log.read_text()


def test_steps_stop_at_the_budget_and_keep_time_for_the_later_ones(tmp_path, monkeypatch):
    check = make_check(tmp_path, "--steps", "kernels,smoke", "--budget-s", "60")
    monkeypatch.setitem(gc.LIMITS, "kernels", (30, 1))
    monkeypatch.setitem(gc.LIMITS, "smoke", (30, 2))
    check.end = time.time() + 4.0  # 4 s left: kernels may take 2 of them, smoke's 2 are kept back
    res = check.run_step("kernels", {"a": [gc.Command("sleep", py("import time; time.sleep(30)"))]})
    assert res.status == "budget" and "budget's end" in res.reason
    assert res.timeout_s <= 2.0 and res.wall_s < 10
    assert res.commands["a"][0]["killed"]
    later = check.run_step("smoke", {"a": [gc.Command("never", py("print(1)"))]})
    assert later.status == "budget" and "left for it" in later.reason and not later.commands  # not started
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["status"] == "budget" and report["exit_code"] == 3
    assert report["steps"]["kernels"]["status"] == "budget"


def test_a_step_at_its_own_cap_is_a_timeout(tmp_path):
    check = make_check(tmp_path, "--cap", "kernels=1", "--steps", "kernels")
    res = check.run_step("kernels", {"a": [gc.Command("sleep", py("import time; time.sleep(30)"))]})
    assert res.status == "timeout" and "cap" in res.reason
    assert gc.exit_code(check.results) == 1


def test_a_failing_command_fails_the_step_and_the_check(tmp_path):
    check = make_check(tmp_path, "--steps", "smoke")
    lanes = {
        "gpu": [
            gc.Command("boom", py("import sys; print('Traceback: CUDA error'); sys.exit(3)")),
            gc.Command("next", py("print('not run')")),
        ],
        "ddp": [gc.Command("fine", py("print('ok')"))],
    }
    res = check.run_step("smoke", lanes)
    assert res.status == "failed" and "boom exited 3" in res.reason
    assert [c["label"] for c in res.commands["gpu"]] == ["boom"]  # the lane stops at its failure
    assert res.commands["ddp"][0]["rc"] == 0  # the other lane still ran
    assert any("CUDA error" in line for line in res.tails["gpu-1-boom.log"])
    skipped = check.run_step("analyze", {"a": [gc.Command("x", py("print(1)"))]}, ready=lambda: "needs the sweep")
    assert skipped.status == "skipped" and skipped.reason == "needs the sweep"
    assert gc.exit_code(check.results) == 1
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| smoke | **failed** |" in md and "CUDA error" in md


# ---------------------------------------------------------------------------------------------- parsing and the report


def hydra_line(t: str, logger: str, msg: str) -> str:
    return f"[2026-12-01 10:{t},000][{logger}][INFO] - {msg}"


def write_sae_job(folder: Path, J: int, seed: int, start: str, train: str, end: str, acts: int) -> None:
    folder.mkdir(parents=True)
    (folder / "train.log").write_text(
        "\n".join(
            [
                hydra_line(start, "sae_sweep.train.sae_stage", "reusing activation cache x"),
                hydra_line(
                    train,
                    "sae_sweep.train.sae_stage",
                    f"training sae-L2-J{J}-s{seed}: J={J}, l1 0.001, until "
                    "converged (at most 23432 steps of 256 activations, d_in=128, 2 torch threads)",
                ),
                hydra_line(
                    end,
                    "sae_sweep.train.sae_stage",
                    f"sae-L2-J{J}-s{seed}: converged at step {acts // 256} ({acts} "
                    "activations); val fvu 0.027, L0 21.5, dead 3.1% (mse 0.0001); saved x:v0 at y",
                ),
            ]
        )
        + "\n"
    )


def test_the_sweep_pretraining_and_analysis_are_read_from_their_logs_and_files(tmp_path):
    root = tmp_path / "sweep"
    sweep = root / "multirun" / "2026-12-01" / "10-00-00"
    write_sae_job(sweep / "0", 256, 0, "00:00", "00:05", "00:25", 2_560_000)
    write_sae_job(sweep / "1", 256, 1, "00:00", "00:06", "00:26", 2_560_000)
    write_sae_job(sweep / "2", 8192, 0, "00:00", "00:05", "00:45", 3_200_000)
    (sweep / "3").mkdir()  # started, no log yet (killed early)
    store = root / "store" / "sae-L2-J256-s0"
    (store / "v0").mkdir(parents=True)
    (store / "latest").write_text("v0\n")
    (store / "v0" / "config.json").write_text(
        json.dumps(
            {"name": "sae-L2-J256-s0", "dict_size": 256, "seed": 0, "training": {"converged": True, "steps": 10000}}
        )
    )
    m = gc.parse_sweep(root, wall_s=50.0)
    assert m["jobs_started"] == 4 and m["jobs_finished"] == 3 and m["jobs_converged"] == 3
    assert m["per_size"]["256"]["jobs"] == 2 and m["per_size"]["256"]["mean_activations_per_s"] == 128_000
    assert m["per_size"]["8192"]["mean_activations_per_s"] == 80_000
    assert m["aggregate_activations_per_s"] == round(8_320_000 / 50)
    assert m["jobs"][0]["store"]["steps"] == 10000 and m["jobs"][0]["seed"] == 0

    pre = tmp_path / "pretrain"
    (pre / "runs" / "gpt-embedded-s0-abc" / "csv").mkdir(parents=True)
    (pre / "runs" / "gpt-embedded-s0-abc" / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,train/tokens,val/loss\n0,99,,,5.1\n0,789,4.4,6471680.0,\n0,799,,,4.35\n0,799,4.3,6553600.0,\n"
    )
    log = tmp_path / "pretrain.log"
    log.write_text(
        "\n".join(
            [
                hydra_line("00:00", "sae_sweep.train.tokens", "preparing tokens: 700 train / 36 val documents"),
                hydra_line(
                    "00:03",
                    "sae_sweep.train.pretrain",
                    "pretraining gpt-embedded-s0: 0.21M parameters (0.21M without "
                    "position embeddings) on embedded, 3400000 train tokens",
                ),
                hydra_line(
                    "00:23",
                    "sae_sweep.train.pretrain",
                    "gpt-embedded-s0: val loss 4.350 nats/token (unigram entropy "
                    "6.515, at init 8.322); saved gpt-embedded-s0:v0 at z",
                ),
            ]
        )
    )
    p = gc.parse_pretrain(log, pre)
    assert p["tokens"] == 6_553_600 and p["tokens_per_s"] == round(6_553_600 / 20) and p["val_loss"] == 4.35
    assert p["val_curve"] == [[99, 5.1], [799, 4.35]] and p["tokens_prep_and_init_eval_s"] == 3.0

    (root / "analysis").mkdir()
    (root / "analysis" / "counts.csv").write_text("dict_size,seed,high\n256,0,233\n")
    (root / "analysis" / "report.md").write_text("# r\n\n## Findings\n\n- one\n\n### sub\n\n- two\n\n## Next\n\n- no\n")
    a = gc.parse_analysis(root)
    assert a["counts.csv"] == [{"dict_size": "256", "seed": "0", "high": "233"}]
    assert a["findings"] == ["- one", "### sub", "- two"]


def test_the_report_shows_what_the_steps_measured(tmp_path):
    check = make_check(tmp_path)
    check.results["env"] = gc.StepResult(
        "env",
        status="ok",
        wall_s=4.0,
        metrics={
            "cuda": {"gpu": "NVIDIA H200", "capability": "9.0", "torch": "2.11.0+cu130", "python": "3.12.3"},
            "versions": {"hydra-core": "1.3.8"},
        },
    )
    check.results["kernels"] = gc.StepResult(
        "kernels",
        status="ok",
        wall_s=9.0,
        metrics={
            "sae_step": {"ok": True, "worst_over_tolerance": 0.01},
            "mcs": {"ok": False, "error": "RuntimeError: boom"},
            "sae_timing": {
                "ok": True,
                "sizes": {
                    "1024": {
                        "dense": {"ms_per_step": 0.5, "activations_per_s": 512000, "peak_allocated_mb": 12.0},
                        "sparse": {"ms_per_step": 1.5, "activations_per_s": 170667, "peak_allocated_mb": 11.0},
                    }
                },
            },
        },
    )
    check.results["pretrain"] = gc.StepResult(
        "pretrain",
        status="ok",
        wall_s=30.0,
        gpu={
            "peak_used_mib": 1500,
            "util_mean": 40.0,
            "util_max": 90.0,
            "peak_process_mib": 900,
            "gpu_processes": 1,
            "samples": 60,
        },
        metrics={"tokens": 6553600, "tokens_per_s": 400000, "val_loss": 4.36, "val_curve": [[799, 4.36]]},
    )
    check.results["sweep"] = gc.StepResult(
        "sweep",
        status="budget",
        reason="stopped at 120 s: the budget's end",
        wall_s=120.0,
        metrics={
            "jobs_started": 12,
            "jobs_finished": 7,
            "per_size": {
                "256": {
                    "jobs": 2,
                    "mean_activations_per_s": 300000,
                    "mean_train_and_save_s": 10.0,
                    "mean_activations_seen": 3000000,
                }
            },
            "jobs": [],
        },
    )
    check.reference = {"pretrain": {"machine": "2 cores", "tokens_per_s": 6771, "val_curve": [[799, 4.3476]]}}
    check.write()
    data = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert data["status"] == "budget" and data["exit_code"] == 3
    assert data["steps"]["pretrain"]["metrics"]["tokens_per_s"] == 400000
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "NVIDIA H200" in md and "hydra-core 1.3.8" in md
    assert "**400,000 tokens/s**" in md and "| 799 | 4.36 | 4.3476 |" in md
    assert "| 1024 | 0.5 | 1.5 |" in md and "mcs: **FAILED** RuntimeError: boom" in md
    assert "| sweep | **budget** |" in md and "| 256 | 2 | 300,000 |" in md
    assert "| pretrain | **ok** | 30.0 | - | 1,500 | 900 | 40.0/90.0 |" in md
    check.pack_logs()
    assert (tmp_path / "out" / "gpu_check_logs.tar.gz").is_file()


# ------------------------------------------------------------------------------------------------ the kernel checks


def test_the_kernel_checks_run_on_the_cpu(tmp_path):
    kernels = load("gpu_kernels")
    assert kernels.main(["--device", "cpu", "--quick", "--json", str(tmp_path / "k.json")]) == 0
    data = json.loads((tmp_path / "k.json").read_text())
    assert data["failed"] == []
    cases = data["sae_step"]["cases"]
    assert {c.split("/")[1] for c in cases} == {"dense", "sparse"} and all(0 < c["density"] for c in cases.values())
    assert data["collective"]["backend"] == "gloo" and data["gpt"]["precision"] == "float32"
    assert data["sae_bf16"]["ok"]
    assert set(data["sae_timing"]["sizes"]["256"]) == {"dense", "sparse"}


@pytest.mark.slow
@pytest.mark.bench  # 85-100 s: out of the test command, run by .ci/run after it (pytest -m bench)
def test_the_whole_check_runs_tiny_on_the_cpu(tmp_path):
    """Every step's real commands (train.py, analyze.py, gpu_kernels.py), tiny, on the CPU: the plan runs end to end."""
    env = {**os.environ, "PYTHON": sys.executable}
    cmd = [
        "bash",
        str(REPO / "benchmarks" / "gpu_check.sh"),
        "--no-install",
        "--allow-cpu",
        "--tiny",
        "--budget-s",
        "1200",
        "--sweep-jobs",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--work",
        str(tmp_path / "work"),
        "--gpt-root",
        str(tmp_path / "none"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    data = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert proc.returncode == 0, (
        proc.stdout[-2000:],
        proc.stderr[-2000:],
        {n: s["status"] for n, s in data["steps"].items()},
    )
    assert [s["status"] for s in data["steps"].values()] == ["ok"] * 6
    assert data["steps"]["sweep"]["metrics"]["jobs_finished"] == 2
    assert data["steps"]["analyze"]["metrics"]["counts.csv"]
    assert "the pretrain step's GPT" in data["sweep_gpt"]
