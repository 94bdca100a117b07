"""Issue 36's GPU check: the project's CUDA paths run for real, timed, in one command with a time limit.

    bash benchmarks/gpu_check.sh                      # on the GPU machine: wheels from .gpu/whl, GPT from .gpu/root
    python benchmarks/gpu_check.py --allow-cpu --tiny --no-install --gpt-root DIR   # the same plan, tiny, on a CPU

The `.gpu/` folder it carries (gitignored: the wheels, the CPU-pretrained GPT, the CPU reference figures) is made first,
on a CPU machine with PyPI, by `bash benchmarks/gpu_prepare.sh` (about 20 min on 2 cores, most of it the pretraining;
a part already there is kept); it prints the device command to run next.

Steps, in order (``--steps`` picks some; each runs in fresh processes under a timeout):

  env       refuses at once, exit status 2, without CUDA (unless --allow-cpu); installs the carried wheels into a
            site folder (only those the image lacks); records python, torch, CUDA, cuDNN, NCCL, the GPU, the driver and
            every package the project imports; warms matplotlib's font cache
  kernels   benchmarks/gpu_kernels.py: the hand-written SAE step against autograd on the GPU, its ms per step at
            batch 256 per dictionary size (dense and sparse), the MCS kernel against the CPU's, bf16 GPT steps, the
            harvest, a one-process NCCL group
  smoke     two lanes side by side: `stage=pretrain experiment=smoke trainer=gpu`, then an SAE on it; and the same
            pretraining with `trainer=ddp trainer.devices=1` (ddp_spawn on NCCL: DDP's gradient all-reduce runs even
            in one process; an SAE there takes the hand-written step, no collective, so only with --ddp-sae)
  pretrain  the default pretraining with trainer=gpu (bf16-mixed), --pretrain-steps steps (800: the whole default),
            on this machine's embedded corpus: tokens/s and the validation loss beside the CPU run's
  sweep     `train.py -m experiment=demo trainer=gpu` (6 sizes x 2 seeds, each until the stopping rule), --sweep-jobs
            at a time, on the CPU-pretrained GPT carried in --gpt-root: activations/s per job and size
  analyze   `analyze.py analysis.device=cuda` on the sweep: its wall time and the report's headline numbers

Every step's commands run in their own process group under a timeout: the step's cap, and never past the budget
(--budget-s, counted from GPU_CHECK_T0 when the shell wrapper sets it) less the minimum time the later steps need, so
that an overrunning sweep still leaves the analysis its turn. A step whose dependency failed is skipped, with the
reason. After every step $OUT/gpu_check.json and gpu_check.md are rewritten (what was measured so far, the versions,
the tail of each log) and gpu_check_logs.tar.gz holds the full logs. GPU memory and utilisation are sampled twice a
second (NVML, or nvidia-smi) and attributed to the step running.

Exit status: 0 every step ok; 1 a step failed, timed out or was interrupted; 2 refused (no CUDA, bad arguments);
3 nothing failed but the budget ran out before every step was done. Standard library only: it runs before the wheels
are installed, and writes its report whatever the steps did.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ("env", "kernels", "smoke", "pretrain", "sweep", "analyze")
# (cap: the most a step may take; need: the least worth starting it with, kept back for it while earlier steps run)
LIMITS = {
    "env": (90, 10),
    "kernels": (120, 20),
    "smoke": (150, 30),
    "pretrain": (180, 30),
    "sweep": (600, 60),
    "analyze": (240, 35),
}
GRACE_S = 8  # between SIGTERM (a job checkpoints and stops) and SIGKILL
RESERVE_S = GRACE_S + 7  # kept at the end of the budget for the last kill and the report
IFNEEDED = "ifneeded"  # wheels installed only when the image's own version is older (typing_extensions, protobuf)
TAIL_LINES = 25
OUTPUTS = ("gpu_check.json", "gpu_check.md", "gpu_check_logs.tar.gz")
LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[([^\]]+)\]\[(\w+)\] - (.*)$")
SAE_DONE = re.compile(
    r"^(?P<name>\S+): (?:converged at step (?P<at>\d+)|did NOT converge) \((?P<acts>\d+) activations\); "
    r"val fvu (?P<fvu>[\d.]+), L0 (?P<l0>[\d.]+), dead (?P<dead>[\d.]+)%"
)
GPT_DONE = re.compile(r"^(?P<name>\S+): val loss (?P<val>[\d.]+) nats/token \(unigram entropy (?P<uni>[\d.]+), at init")

PROBE_CUDA = r"""
import json, os, sys
import torch
info = {"python": sys.version.split()[0], "executable": sys.executable, "torch": torch.__version__,
        "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
if info["cuda_available"]:
    optional = {
        "device_count": lambda: torch.cuda.device_count(),
        "gpu": lambda: torch.cuda.get_device_properties(0).name,
        "capability": lambda: "%d.%d" % torch.cuda.get_device_capability(0),
        "gpu_memory_gib": lambda: round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        "multiprocessors": lambda: torch.cuda.get_device_properties(0).multi_processor_count,
        "bf16": lambda: torch.cuda.is_bf16_supported(),
        "cudnn": lambda: torch.backends.cudnn.version(),
        "nccl": lambda: str(torch.cuda.nccl.version()),
    }
    for key, get in optional.items():  # a missing detail is recorded, never a refusal
        try:
            info[key] = get()
        except Exception as exc:
            info[key] = f"unknown ({type(exc).__name__}: {exc})"
print("GPU_CHECK_JSON " + json.dumps(info, default=str))
"""

PROBE_ENV = r"""
import importlib, importlib.metadata as md, json, time
dists = ["torch", "lightning", "pytorch-lightning", "hydra-core", "omegaconf", "antlr4-python3-runtime",
         "hydra-joblib-launcher", "joblib", "wandb", "pydantic", "protobuf", "typing_extensions", "numpy", "scipy",
         "matplotlib", "tokenizers", "safetensors", "filelock", "rich", "torchmetrics", "nvidia-ml-py"]
versions = {}
for d in dists:
    try:
        versions[d] = md.version(d)
    except md.PackageNotFoundError:
        versions[d] = None
imports = {}
for m in ["torch", "lightning.pytorch", "hydra", "omegaconf", "hydra_plugins.hydra_joblib_launcher", "wandb",
          "numpy", "scipy.optimize", "matplotlib.font_manager", "tokenizers", "safetensors", "filelock", "rich",
          "sae_sweep.config"]:
    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(m)
        imports[m] = {"ok": True, "file": getattr(mod, "__file__", None), "s": round(time.perf_counter() - t0, 2)}
    except Exception as exc:
        imports[m] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
corpus = {}
try:  # the embedded corpus the smoke and pretrain steps tokenize: this Python's standard library sources
    from sae_sweep.train.corpus import embedded_files
    files = embedded_files()
    corpus = {"files": len(files), "mb": round(sum(f.stat().st_size for f in files) / 1e6, 2)}
except Exception as exc:
    corpus = {"error": f"{type(exc).__name__}: {exc}"}
print("GPU_CHECK_JSON " + json.dumps({"versions": versions, "imports": imports, "embedded_corpus": corpus}))
"""


# --------------------------------------------------------------------------------------------- running commands


@dataclass
class Command:
    label: str
    argv: list[str]
    root: Path | None = None  # SAE_SWEEP_ROOT


@dataclass
class CommandResult:
    label: str
    argv: list[str]
    log: Path
    rc: int | None = None
    wall_s: float = 0.0
    killed: bool = False

    def to_dict(self, logs_dir: Path) -> dict:
        return {
            "label": self.label,
            "argv": self.argv,
            "rc": self.rc,
            "wall_s": round(self.wall_s, 2),
            "killed": self.killed,
            "log": str(self.log.relative_to(logs_dir)),
        }


def kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the command's process group (its jobs checkpoint and stop); SIGKILL to whatever of the group is
    left after ``grace`` (a sweep's workers outlive their launcher), so nothing of it runs into the next step."""
    pgid = proc.pid

    def group_alive() -> bool:
        proc.poll()  # reap the leader, or its zombie keeps the group alive
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    until = time.monotonic() + grace
    while time.monotonic() < until and group_alive():
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def run_lanes(
    lanes: dict[str, list[Command]], env: dict, deadline: float, logs: Path, stop: threading.Event, grace: float
) -> dict[str, list[CommandResult]]:
    """Run each lane's commands one after another, the lanes side by side; a lane stops at its first failure.

    Past ``deadline`` (or once ``stop`` is set) every running command's process group is killed (``killed``)."""
    results: dict[str, list[CommandResult]] = {lane: [] for lane in lanes}
    running: dict[str, tuple[subprocess.Popen, CommandResult, float, object]] = {}
    todo = {lane: list(cmds) for lane, cmds in lanes.items()}
    while True:
        for lane, cmds in todo.items():
            if lane in running or not cmds:
                continue
            if results[lane] and results[lane][-1].rc != 0:
                cmds.clear()  # the lane failed: its later commands need what the failed one makes
                continue
            cmd = cmds.pop(0)
            log = logs / f"{lane}-{len(results[lane]) + 1}-{cmd.label}.log"
            res = CommandResult(cmd.label, cmd.argv, log)
            results[lane].append(res)
            fh = open(log, "w")  # noqa: SIM115 - closed when the command ends
            fh.write(f"$ {' '.join(cmd.argv)}\n# SAE_SWEEP_ROOT={cmd.root}\n")
            fh.flush()
            cenv = dict(env) | ({"SAE_SWEEP_ROOT": str(cmd.root)} if cmd.root else {})
            proc = subprocess.Popen(
                cmd.argv,
                cwd=REPO,
                env=cenv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            running[lane] = (proc, res, time.monotonic(), fh)
        if not running:
            return results
        for lane, (proc, res, t0, fh) in list(running.items()):
            if proc.poll() is not None:
                res.rc, res.wall_s = proc.returncode, time.monotonic() - t0
                fh.close()
                del running[lane]
        if running and (time.monotonic() >= deadline or stop.is_set()):
            for lane, (proc, res, t0, fh) in running.items():
                kill_group(proc, grace)
                res.rc, res.wall_s, res.killed = proc.returncode, time.monotonic() - t0, True
                fh.close()
                todo[lane].clear()
            running.clear()
        time.sleep(0.1)


def run_probe(code: str, env: dict, timeout: float) -> tuple[dict | None, str]:
    """Run a probe snippet; its JSON (the line after GPU_CHECK_JSON) and its whole output."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        return None, f"timed out after {timeout:.0f} s\n{exc.stdout or ''}{exc.stderr or ''}"
    out = proc.stdout + proc.stderr
    for line in proc.stdout.splitlines():
        if line.startswith("GPU_CHECK_JSON "):
            return json.loads(line.removeprefix("GPU_CHECK_JSON ")), out
    return None, out


# --------------------------------------------------------------------------------------------- GPU sampling


class GPUSampler(threading.Thread):
    """Device memory in use, utilisation and each process's memory, twice a second, attributed to ``self.bucket``."""

    def __init__(self, period: float = 0.5) -> None:
        super().__init__(daemon=True, name="gpu-sampler")
        self.period, self.bucket, self.stats, self.source = period, None, {}, None
        self._halt = threading.Event()
        self._read = self._nvml() or self._smi()

    def _nvml(self):
        try:
            import pynvml  # noqa: PLC0415 - nvidia-ml-py, on the GPU machine's image

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001 - no NVML here: try nvidia-smi
            return None
        self.source = "nvml"

        def read():
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            procs = {p.pid: (p.usedGpuMemory or 0) / 2**20 for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)}
            return mem, util, procs

        return read

    def _smi(self):
        if shutil.which("nvidia-smi") is None:
            return None
        self.source, self.period = "nvidia-smi", max(self.period, 1.0)

        def query(what: str) -> list[list[str]]:
            out = subprocess.run(
                ["nvidia-smi", f"--query-{what}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            return [[c.strip() for c in line.split(",")] for line in out.strip().splitlines() if line.strip()]

        def read():
            mem, util = query("gpu=memory.used,utilization.gpu")[0]
            procs = {int(p): float(m) for p, m in query("compute-apps=pid,used_memory") if m.replace(".", "").isdigit()}
            return float(mem), float(util), procs

        return read

    def run(self) -> None:
        while self._read is not None and not self._halt.wait(self.period):
            try:
                mem, util, procs = self._read()
            except Exception as exc:  # noqa: BLE001 - sampling must never stop the check
                self.source = f"{self.source} (stopped: {type(exc).__name__}: {exc})"
                return
            s = self.stats.setdefault(
                self.bucket,
                {
                    "samples": 0,
                    "peak_used_mib": 0.0,
                    "util_sum": 0.0,
                    "util_max": 0.0,
                    "peak_process_mib": 0.0,
                    "pids": set(),
                },
            )
            s["samples"] += 1
            s["peak_used_mib"] = max(s["peak_used_mib"], mem)
            s["util_sum"] += util
            s["util_max"] = max(s["util_max"], util)
            s["peak_process_mib"] = max([s["peak_process_mib"], *procs.values()])
            s["pids"] |= set(procs)

    def summary(self, bucket: str) -> dict | None:
        s = self.stats.get(bucket)
        if not s or not s["samples"]:
            return None
        return {
            "peak_used_mib": round(s["peak_used_mib"]),
            "util_mean": round(s["util_sum"] / s["samples"], 1),
            "util_max": s["util_max"],
            "peak_process_mib": round(s["peak_process_mib"]),
            "gpu_processes": len(s["pids"]),
            "samples": s["samples"],
        }

    def halt(self) -> None:
        self._halt.set()


# --------------------------------------------------------------------------------------------- parsing outputs


def log_lines(path: Path) -> list[tuple[datetime, str, str, str]]:
    """(time, logger, level, message) of every Hydra-formatted line of a log."""
    out = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = LOG_LINE.match(line.strip())
        if m:
            out.append((datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f"), m[2], m[3], m[4]))
    return out


def first(lines, pattern: str):
    """The first (time, match) whose message matches ``pattern``."""
    rx = re.compile(pattern)
    for t, _, _, msg in lines:
        if m := rx.search(msg):
            return t, m
    return None, None


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line[:300] for line in lines if line.strip()][-n:]


def read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def sae_result(msg: str) -> dict | None:
    m = SAE_DONE.match(msg)
    if not m:
        return None
    return {
        "name": m["name"],
        "converged": m["at"] is not None,
        "converged_at_step": int(m["at"]) if m["at"] else None,
        "activations": int(m["acts"]),
        "val_fvu": float(m["fvu"]),
        "val_l0": float(m["l0"]),
        "dead_pct": float(m["dead"]),
    }


def parse_pretrain(log: Path, root: Path) -> dict:
    """Tokens/s of a pretraining command from its log lines and Lightning's metrics.csv; the validation curve."""
    lines = log_lines(log)
    out: dict = {}
    t_tok, _ = first(lines, r"^(preparing tokens|reusing token cache)")
    t_train, m_train = first(lines, r"^pretraining (\S+): .* on \S+, (\d+) train tokens")
    t_done, m_done = first(lines, GPT_DONE.pattern)
    if m_train:
        out["train_tokens_in_corpus"] = int(m_train[2])
    if t_tok and t_train:
        out["tokens_prep_and_init_eval_s"] = round((t_train - t_tok).total_seconds(), 2)
    if m_done:
        out["val_loss"], out["unigram_entropy"] = float(m_done["val"]), float(m_done["uni"])
    metrics = sorted(root.glob("runs/gpt-*/csv/metrics.csv"), key=lambda p: p.stat().st_mtime)
    rows = read_csv(metrics[-1]) if metrics else []
    tokens = max((num(r.get("train/tokens")) or 0 for r in rows), default=0)
    steps = max((int(num(r.get("step")) or 0) for r in rows), default=0)
    out["val_curve"] = [[int(num(r["step"])), round(num(r["val/loss"]), 4)] for r in rows if num(r.get("val/loss"))]
    if tokens:
        out["tokens"] = int(tokens)
        out["steps_logged_to"] = steps + 1
    if t_train and t_done:
        fit = (t_done - t_train).total_seconds()
        out["train_and_export_s"] = round(fit, 2)
        if tokens and fit > 0:
            out["tokens_per_s"] = round(tokens / fit)
    return out


def parse_sae_log(log: Path) -> dict:
    lines = log_lines(log)
    out: dict = {}
    t0 = lines[0][0] if lines else None
    t_train, m_train = first(lines, r"^training (\S+): J=(\d+), .* \(at most (\d+) steps")
    t_harv, m_harv = first(lines, r"^harvested .* in ([\d.]+)s")
    for t, _, _, msg in lines:
        if (done := sae_result(msg)) is not None:
            out.update(done)
            if t_train:
                out["train_and_save_s"] = round((t - t_train).total_seconds(), 2)
                out["activations_per_s"] = round(done["activations"] / max(out["train_and_save_s"], 1e-3))
            if t0:
                out["job_s"] = round((t - t0).total_seconds(), 2)
    if m_train:
        out.setdefault("name", m_train[1])
        out["dict_size"], out["max_steps"] = int(m_train[2]), int(m_train[3])
        if t0:
            out["start_to_training_s"] = round((t_train - t0).total_seconds(), 2)
    if m_harv:
        out["harvest_s"] = float(m_harv[1])
    if m := re.search(r"-s(\d+)(?:-|$)", out.get("name", "")):
        out["seed"] = int(m[1])
    errors = [msg for _, _, level, msg in lines if level in ("ERROR", "CRITICAL")]
    if errors:
        out["errors"] = errors[-3:]
    return out


def dictionaries(root: Path) -> list[dict]:
    """What each dictionary in the store's config.json says about its training (latest versions)."""
    found = []
    for latest in sorted((root / "store").glob("sae-*/latest")):
        cfg_path = latest.parent / latest.read_text().strip() / "config.json"
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        tr, mt = cfg.get("training") or {}, cfg.get("metrics") or {}
        found.append(
            {
                "name": cfg.get("name"),
                "dict_size": cfg.get("dict_size"),
                "seed": cfg.get("seed"),
                "converged": tr.get("converged"),
                "steps": tr.get("steps"),
                "activations_seen": tr.get("activations_seen"),
                "threads": tr.get("threads"),
                "val_fvu": mt.get("val/fvu"),
                "val_l0": mt.get("val/l0"),
                "dead_fraction": mt.get("val/dead_fraction"),
            }
        )
    return found


def parse_sweep(root: Path, wall_s: float) -> dict:
    sweeps = sorted(p for p in root.glob("multirun/*/*") if p.is_dir())
    jobs = []
    for job_dir in (
        sorted((p for p in sweeps[-1].iterdir() if p.name.isdigit()), key=lambda p: int(p.name)) if sweeps else []
    ):
        logs = sorted(job_dir.glob("*.log"))
        job = {"job": int(job_dir.name)} | (parse_sae_log(logs[0]) if logs else {"error": "no log"})
        jobs.append(job)
    store = {d["name"]: d for d in dictionaries(root)}
    for job in jobs:
        if job.get("name") in store:
            job["store"] = store[job["name"]]
    sizes: dict[int, dict] = {}
    for job in jobs:
        if "activations_per_s" in job:
            s = sizes.setdefault(job["dict_size"], {"jobs": 0, "activations": 0, "seconds": 0.0, "rates": []})
            s["jobs"] += 1
            s["activations"] += job["activations"]
            s["seconds"] += job["train_and_save_s"]
            s["rates"].append(job["activations_per_s"])
    per_size = {
        str(j): {
            "jobs": s["jobs"],
            "mean_activations_per_s": round(sum(s["rates"]) / len(s["rates"])),
            "mean_train_and_save_s": round(s["seconds"] / s["jobs"], 1),
            "mean_activations_seen": round(s["activations"] / s["jobs"]),
        }
        for j, s in sorted(sizes.items())
    }
    done = [j for j in jobs if "activations" in j]
    total = sum(j["activations"] for j in done)
    return {
        "dir": str(sweeps[-1]) if sweeps else None,
        "jobs_started": len(jobs),
        "jobs_finished": len(done),
        "jobs_converged": sum(1 for j in done if j.get("converged")),
        "activations_total": total,
        "aggregate_activations_per_s": round(total / wall_s) if wall_s > 0 else None,
        "per_size": per_size,
        "jobs": jobs,
    }


def markdown_table(rows: list[dict], limit: int = 20) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    out += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows[:limit]]
    return out


def parse_analysis(root: Path) -> dict:
    """The report's headline numbers: counts, correlations and the Findings section, whatever files exist."""
    folder = root / "analysis"
    out: dict = {"dir": str(folder), "files": sorted(p.name for p in folder.glob("*"))[:80] if folder.is_dir() else []}
    for name in ("counts.csv", "correlations.csv", "low_mode_tests.csv", "training.csv"):
        rows = read_csv(folder / name)
        if rows:
            out[name] = rows[:24]
    report = folder / "report.md"
    if report.is_file():
        text = report.read_text(errors="replace")
        out["report_chars"] = len(text)
        m = re.search(r"^## *Findings.*?$(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
        if m:
            out["findings"] = [line for line in m[1].strip().splitlines() if line.strip()][:40]
    return out


# --------------------------------------------------------------------------------------------- the check


@dataclass
class StepResult:
    name: str
    status: str = "pending"  # ok | failed | timeout | budget | skipped | refused | interrupted | running
    reason: str = ""
    started_s: float | None = None  # since the start of the check
    wall_s: float = 0.0
    timeout_s: float | None = None
    commands: dict = field(default_factory=dict)  # lane -> [CommandResult.to_dict()]
    metrics: dict = field(default_factory=dict)
    gpu: dict | None = None
    tails: dict = field(default_factory=dict)  # log name -> last lines

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "name",
                "status",
                "reason",
                "started_s",
                "wall_s",
                "timeout_s",
                "commands",
                "metrics",
                "gpu",
                "tails",
            )
        }


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = float(os.environ.get("GPU_CHECK_T0") or time.time())  # the shell wrapper's start, if any
        self.end = self.t0 + args.budget_s - RESERVE_S
        self.out = Path(args.out)
        default = Path(tempfile.gettempdir()) / f"gpu_check_{int(self.t0)}_{os.getpid()}"
        self.work = Path(args.work) if args.work else default  # made when the first step runs
        self.logs = self.work / "logs"
        self.results: dict[str, StepResult] = {}
        self.info: dict = {
            "started": datetime.fromtimestamp(self.t0).isoformat(timespec="seconds"),
            "budget_s": args.budget_s,
            "argv": sys.argv[1:],
            "work": str(self.work),
        }
        self.device = "cuda"
        self.logger = args.logger
        self.site: Path | None = None
        self.stop = threading.Event()
        self.sampler: GPUSampler | None = None
        self.reference = self._reference()

    # ----------------------------------------------------------------------- set-up
    def _reference(self) -> dict | None:
        path = Path(self.args.reference) if self.args.reference else REPO / ".gpu" / "cpu_reference.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def child_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("SAE_SWEEP_ROOT",)}
        path = [str(self.site)] if self.site else []
        path += [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env.update(
            PYTHONPATH=os.pathsep.join(path),
            PYTHONUNBUFFERED="1",
            WANDB_MODE="offline",
            WANDB_SILENT="true",
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            MPLBACKEND="Agg",
        )
        return env

    def elapsed(self) -> float:
        return time.time() - self.t0

    # ----------------------------------------------------------------------- the report
    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        status = overall_status(self.results)
        data = {
            "status": status,
            "exit_code": exit_code(self.results),
            "elapsed_s": round(self.elapsed(), 1),
            **self.info,
            "device": self.device,
            "logger": self.logger,
            "gpu_sampling": self.sampler.source if self.sampler else None,
            "reference": self.reference,
            "steps": {n: r.to_dict() for n, r in self.results.items()},
        }
        tmp = self.out / ".gpu_check.json.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, self.out / "gpu_check.json")
        tmp = self.out / ".gpu_check.md.tmp"
        tmp.write_text(render_markdown(data))
        os.replace(tmp, self.out / "gpu_check.md")

    def pack_logs(self) -> None:
        """Every log, Hydra job log and the analysis's text outputs, each cut to its last 2 MB, in one tar.gz."""
        dest = self.out / "gpu_check_logs.tar.gz"
        budget = 12 * 2**20
        with tarfile.open(dest, "w:gz") as tar:
            files = sorted(self.logs.glob("*")) if self.logs.is_dir() else []
            files += sorted(self.work.glob("*/multirun/*/*/*/*.log")) + sorted(self.work.glob("*/hydra/**/*.log"))
            files += [p for p in sorted(self.work.glob("*/analysis/*")) if p.suffix in (".md", ".csv")]
            files += sorted(self.work.glob("*/runs/*/csv/metrics.csv"))
            for path in files:
                if not path.is_file() or budget <= 0:
                    continue
                data = path.read_bytes()[-2 * 2**20 :]
                budget -= len(data)
                info = tarfile.TarInfo(str(path.relative_to(self.work)))
                info.size, info.mtime = len(data), int(path.stat().st_mtime)
                tar.addfile(info, fileobj=_BytesReader(data))

    # ----------------------------------------------------------------------- steps
    def available(self, name: str) -> float:
        """Seconds this step may take: to the end of the budget, less what the later requested steps need."""
        later = STEPS[STEPS.index(name) + 1 :]
        keep = sum(LIMITS[s][1] for s in later if s in self.args.steps)
        return self.end - time.time() - keep

    def run_step(self, name: str, lanes: dict[str, list[Command]], parse=None, ready=None) -> StepResult:
        res = self.results[name] = StepResult(name)
        cap, need = LIMITS[name]
        cap = self.args.cap.get(name, cap)
        reason = ready() if ready else None
        if reason:
            res.status, res.reason = "skipped", reason
            self.write()
            return res
        avail = self.available(name)
        if avail < need or self.stop.is_set():
            res.status = "skipped" if self.stop.is_set() else "budget"
            res.reason = (
                "interrupted"
                if self.stop.is_set()
                else (f"only {max(avail, 0):.0f} s of the budget left for it (it needs {need} s)")
            )
            self.write()
            return res
        res.timeout_s = round(min(cap, avail), 1)
        res.started_s, res.status = round(self.elapsed(), 1), "running"
        self.write()  # a hard kill from outside still leaves the step it reached
        if self.sampler:
            self.sampler.bucket = name
        t0 = time.monotonic()
        env = self.child_env()
        done = run_lanes(lanes, env, time.monotonic() + res.timeout_s, self.logs, self.stop, GRACE_S)
        res.wall_s = round(time.monotonic() - t0, 2)
        if self.sampler:
            self.sampler.bucket = None
            res.gpu = self.sampler.summary(name)
        res.commands = {lane: [c.to_dict(self.logs) for c in cmds] for lane, cmds in done.items()}
        flat = [c for cmds in done.values() for c in cmds]
        planned = sum(len(c) for c in lanes.values())
        for c in flat:
            res.tails[c.log.name] = tail(c.log)
        if any(c.killed for c in flat):
            limited = res.timeout_s < cap
            res.status = "interrupted" if self.stop.is_set() else ("budget" if limited else "timeout")
            res.reason = (
                "stopped by a signal"
                if self.stop.is_set()
                else (f"stopped at {res.timeout_s:.0f} s: " + ("the budget's end" if limited else "the step's cap"))
            )
        elif any(c.rc != 0 for c in flat) or len(flat) < planned:
            bad = [c for c in flat if c.rc != 0]
            res.status = "failed"
            res.reason = "; ".join(f"{c.label} exited {c.rc}" for c in bad) or "a command did not run"
        else:
            res.status = "ok"
        if parse:
            try:
                res.metrics = parse(done, res)
            except Exception as exc:  # noqa: BLE001 - a parsing slip must not lose the run's other figures
                res.metrics = {"parse_error": f"{type(exc).__name__}: {exc}"}
        self.write()
        return res

    def ok(self, name: str) -> bool:
        return name in self.results and self.results[name].status == "ok"


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.pos :] if n < 0 else self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk


def overall_status(results: dict[str, StepResult]) -> str:
    statuses = [r.status for r in results.values()]
    if "refused" in statuses:
        return "refused"
    if any(s in ("failed", "timeout", "interrupted") for s in statuses):
        return "failed"
    if "running" in statuses or "pending" in statuses:
        return "running"
    if "budget" in statuses:
        return "budget"
    if any(r.status == "skipped" and r.reason != "not requested" for r in results.values()):
        return "failed"
    return "ok"


def exit_code(results: dict[str, StepResult]) -> int:
    return {"ok": 0, "refused": 2, "budget": 3}.get(overall_status(results), 1)


# --------------------------------------------------------------------------------------------- markdown


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value}{unit}"


def render_markdown(data: dict) -> str:
    steps = data["steps"]
    env = steps.get("env", {}).get("metrics", {})
    cuda, versions = env.get("cuda", {}), env.get("versions", {})
    lines = [f"# GPU check: {data['status']} (exit {data['exit_code']})", ""]
    lines.append(
        f"Started {data['started']}, {data['elapsed_s']} s of a {data['budget_s']} s budget; device "
        f"`{data['device']}`, logger `{data['logger']}`, GPU sampling: {data['gpu_sampling'] or 'none'}."
    )
    if cuda:
        lines.append(
            f"GPU: {cuda.get('gpu', '-')} (compute {cuda.get('capability', '-')}, "
            f"{cuda.get('gpu_memory_gib', '-')} GiB, {cuda.get('multiprocessors', '-')} SMs), driver "
            f"{env.get('driver', '-')}; Python {cuda.get('python')}, torch {cuda.get('torch')} (CUDA "
            f"{cuda.get('cuda_build')}, cuDNN {cuda.get('cudnn', '-')}, NCCL {cuda.get('nccl', '-')}), "
            f"{cuda.get('cpu_count')} CPUs."
        )
    if versions:
        lines.append("Packages: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".")
    if env.get("install"):
        lines.append(f"Install: {json.dumps(env['install'])}.")
    if env.get("embedded_corpus"):
        lines.append(f"Embedded corpus here (the smoke and pretrain steps'): {json.dumps(env['embedded_corpus'])}.")
    lines += [
        "",
        "| step | status | wall s | timeout s | GPU peak used MiB | peak per process MiB | util mean/max % | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in steps.items():
        g = s.get("gpu") or {}
        util = f"{g['util_mean']}/{g['util_max']}" if g else "-"
        lines.append(
            f"| {name} | **{s['status']}** | {fmt(s['wall_s'])} | {fmt(s['timeout_s'])} | "
            f"{fmt(g.get('peak_used_mib'))} | {fmt(g.get('peak_process_mib'))} | {util} | "
            f"{s['reason'] or ''} |"
        )
    lines += _kernels_md(steps.get("kernels")) + _smoke_md(steps.get("smoke"))
    lines += _pretrain_md(steps.get("pretrain"), data.get("reference") or {})
    lines += _sweep_md(steps.get("sweep"), data.get("reference") or {}) + _analysis_md(steps.get("analyze"))
    lines += ["", "## Log tails", ""]
    for name, s in steps.items():
        for log, tl in (s.get("tails") or {}).items():
            if s["status"] != "ok" or name in ("env", "kernels"):
                lines += [f"### {name}: {log}", "", "```", *tl, "```", ""]
            else:
                lines += [f"### {name}: {log} (last 5 lines)", "", "```", *tl[-5:], "```", ""]
    return "\n".join(lines) + "\n"


def _kernels_md(s: dict | None) -> list[str]:
    m = (s or {}).get("metrics") or {}
    if not m:
        return []
    out = ["", "## Kernels (benchmarks/gpu_kernels.py)", ""]
    for name in ("sae_step", "sae_bf16", "mcs", "gpt", "harvest", "collective"):
        c = m.get(name) or {}
        if not c.get("ok"):
            out.append(f"- {name}: **FAILED** {c.get('error', 'not run')}")
            continue
        brief = {k: v for k, v in c.items() if k not in ("ok", "cases", "traceback")}
        out.append(f"- {name}: ok {json.dumps(brief)}")
    t = (m.get("sae_timing") or {}).get("sizes") or {}
    if t:
        out += [
            "",
            "SAE step at batch 256 (trained-like, L0 20; one_step's work without Lightning):",
            "",
            "| J | dense ms | sparse ms | dense act/s | sparse act/s | peak alloc MiB |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for J, row in t.items():
            d, sp = row["dense"], row["sparse"]
            out.append(
                f"| {J} | {d['ms_per_step']} | {sp['ms_per_step']} | {fmt(d['activations_per_s'])} | "
                f"{fmt(sp['activations_per_s'])} | {fmt(sp['peak_allocated_mb'])} |"
            )
    elif (m.get("sae_timing") or {}).get("error"):
        out.append(f"- sae_timing: **FAILED** {m['sae_timing']['error']}")
    return out


def _smoke_md(s: dict | None) -> list[str]:
    m = (s or {}).get("metrics") or {}
    if not m:
        return []
    out = ["", "## Smoke runs", ""]
    for lane, cmds in (s.get("commands") or {}).items():
        for c in cmds:
            extra = m.get(f"{lane}/{c['label']}") or {}
            out.append(f"- {lane} / {c['label']}: rc {c['rc']}, {c['wall_s']} s {json.dumps(extra)}")
    return out


def _pretrain_md(s: dict | None, ref: dict) -> list[str]:
    m = (s or {}).get("metrics") or {}
    if not m:
        return []
    cpu = ref.get("pretrain") or {}
    out = [
        "",
        "## Pretraining (trainer=gpu, bf16-mixed)",
        "",
        f"{fmt(m.get('steps_logged_to'))} steps, {fmt(m.get('tokens'))} tokens: **{fmt(m.get('tokens_per_s'))} "
        f"tokens/s** from the first training line to the saved artifact ({fmt(m.get('train_and_export_s'))} s, "
        f"validation passes, checkpoints and the final CPU evaluation included); the whole command "
        f"{fmt(m.get('command_s'))} s. Validation loss {fmt(m.get('val_loss'))} (unigram entropy "
        f"{fmt(m.get('unigram_entropy'))}).",
    ]
    if cpu:
        out.append(
            f"CPU reference ({cpu.get('machine', '?')}): {fmt(cpu.get('steps'))} steps, "
            f"{fmt(cpu.get('tokens_per_s'))} tokens/s, whole command {fmt(cpu.get('command_s'))} s, "
            f"validation loss {fmt(cpu.get('val_loss'))}."
        )
    curve, cpu_curve = dict(map(tuple, m.get("val_curve") or [])), dict(map(tuple, cpu.get("val_curve") or []))
    if curve:
        out += ["", "| step | val loss (GPU) | val loss (CPU reference) |", "| --- | --- | --- |"]
        out += [f"| {k} | {v} | {cpu_curve.get(k, '-')} |" for k, v in sorted(curve.items())]
    return out


def _sweep_md(s: dict | None, ref: dict) -> list[str]:
    m = (s or {}).get("metrics") or {}
    if not m:
        return []
    out = [
        "",
        "## SAE sweep (experiment=demo)",
        "",
        f"{m.get('jobs_finished')} of {m.get('jobs_started')} jobs finished ({m.get('jobs_converged')} met the "
        f"stopping rule), {fmt(m.get('activations_total'))} activations in {fmt(s.get('wall_s'))} s: "
        f"**{fmt(m.get('aggregate_activations_per_s'))} activations/s** for the whole sweep "
        f"({m.get('jobs_at_once')} jobs at a time). Per job, from its 'training' line to its saved dictionary "
        f"(held-out evaluations, snapshots and the final CPU evaluation included):",
        "",
        "| J | seed | steps | converged | activations | train+save s | act/s | job s | val FVU | L0 | dead % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for j in m.get("jobs") or []:
        st = j.get("store") or {}
        out.append(
            f"| {j.get('dict_size', '-')} | {j.get('seed', '-')} | {fmt(st.get('steps'))} | "
            f"{j.get('converged', '-')} | {fmt(j.get('activations'))} | {fmt(j.get('train_and_save_s'))} | "
            f"{fmt(j.get('activations_per_s'))} | {fmt(j.get('job_s'))} | {j.get('val_fvu', '-')} | "
            f"{j.get('val_l0', '-')} | {j.get('dead_pct', '-')} |"
        )
    if m.get("per_size"):
        out += [
            "",
            "| J | jobs | mean act/s per job | mean train+save s | mean activations seen |",
            "| --- | --- | --- | --- | --- |",
        ]
        out += [
            f"| {J} | {v['jobs']} | {fmt(v['mean_activations_per_s'])} | {fmt(v['mean_train_and_save_s'])} | "
            f"{fmt(v['mean_activations_seen'])} |"
            for J, v in m["per_size"].items()
        ]
    if ref.get("sweep"):
        out.append(f"\nCPU reference: {ref['sweep']}")
    return out


def _analysis_md(s: dict | None) -> list[str]:
    m = (s or {}).get("metrics") or {}
    if not m:
        return []
    out = ["", "## Analysis (analyze.py)", "", f"Whole command {fmt(m.get('command_s'))} s."]
    for name in ("counts.csv", "correlations.csv"):
        if m.get(name):
            out += ["", f"`{name}`:", "", *markdown_table(m[name])]
    if m.get("findings"):
        out += ["", "Findings (report.md):", "", *m["findings"]]
    return out


# --------------------------------------------------------------------------------------------- the plan


def train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *overrides]


def trainer(device: str, ddp: bool = False) -> list[str]:
    if device == "cuda":
        return ["trainer=ddp", "trainer.devices=1"] if ddp else ["trainer=gpu"]
    if ddp:  # the same strategy on the CPU (gloo), as the project's own tests run it
        return ["trainer=ddp", "trainer.devices=1", "trainer.accelerator=cpu", "trainer.precision=32-true"]
    return ["trainer=cpu"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check = Check(args)
    if args.dry_run:
        for name, lanes in plan(check).items():
            for lane, cmds in lanes.items():
                for c in cmds:
                    print(f"{name}/{lane}: SAE_SWEEP_ROOT={c.root} {' '.join(c.argv)}")
        return 0

    def on_signal(signum, frame):
        check.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = env_step(check)
    if code is not None:
        return code
    check.logs.mkdir(parents=True, exist_ok=True)
    check.sampler = GPUSampler()
    check.sampler.start()
    try:
        run_plan(check)
    finally:
        check.sampler.halt()
        check.info["finished"] = datetime.now().isoformat(timespec="seconds")
        check.write()
        check.pack_logs()
    code = exit_code(check.results)
    print(
        f"gpu_check: {overall_status(check.results)} (exit {code}) in {check.elapsed():.0f} s; "
        f"report in {check.out / 'gpu_check.md'}"
    )
    return code


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    ap.add_argument("--budget-s", type=float, default=230.0, help="stop everything by then (default 230)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, from {','.join(STEPS)} (env always)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="report folder (default $OUT)")
    ap.add_argument("--work", help="working folder for the runs' roots and logs (default: a new temporary one)")
    ap.add_argument("--site", help="a site folder with the missing packages already installed: no install")
    ap.add_argument("--wheels", default=str(REPO / ".gpu" / "whl"), help="wheels to install (default .gpu/whl)")
    ap.add_argument("--site-target", default="/tmp/gpu_check_site", help="where the wheels are installed")
    ap.add_argument("--no-install", action="store_true", help="use the interpreter's own packages")
    ap.add_argument(
        "--gpt-root",
        default=str(REPO / ".gpu" / "root"),
        help="an SAE_SWEEP_ROOT holding the CPU-pretrained GPT and its token cache (default .gpu/root)",
    )
    ap.add_argument("--reference", help="CPU figures to compare with (default .gpu/cpu_reference.json)")
    ap.add_argument("--pretrain-steps", type=int, default=800, help="pretrain.max_steps (800: the whole default)")
    ap.add_argument("--sweep-jobs", type=int, default=6, help="sweep jobs at a time (hydra.launcher.n_jobs)")
    ap.add_argument(
        "--logger",
        default="auto",
        choices=("auto", "wandb_offline", "none"),
        help="auto: wandb_offline when wandb imports, else none (a warning)",
    )
    ap.add_argument(
        "--sweep-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more override for the sweep's jobs (e.g. sae.step=dense); repeatable",
    )
    ap.add_argument("--ddp-sae", action="store_true", help="also an SAE smoke job under trainer=ddp (about 20 s more)")
    ap.add_argument("--cap", action="append", default=[], metavar="STEP=S", help="override one step's cap")
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no CUDA (tests)")
    ap.add_argument("--tiny", action="store_true", help="smoke-sized pretraining, sweep and analysis (tests)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = ap.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    bad = [s for s in args.steps if s not in STEPS]
    if bad:
        ap.error(f"--steps: unknown step(s) {', '.join(bad)}; choose from {', '.join(STEPS)}")
    if "env" not in args.steps:
        args.steps.insert(0, "env")
    caps = {}
    for item in args.cap:
        name, _, value = item.partition("=")
        if name not in STEPS or not value.replace(".", "", 1).isdigit():
            ap.error(f"--cap {item!r}: give STEP=SECONDS with STEP one of {', '.join(STEPS)}")
        caps[name] = float(value)
    args.cap = caps
    if args.budget_s <= RESERVE_S + 10:
        ap.error(f"--budget-s must be more than {RESERVE_S + 10} s")
    if not 100 <= args.pretrain_steps <= 100_000:
        ap.error("--pretrain-steps must be in [100, 100000] (the recipe warms up over 50 steps)")
    if not 1 <= args.sweep_jobs <= 64:
        ap.error("--sweep-jobs must be in [1, 64]")
    return args


def env_step(check: Check) -> int | None:
    """The CUDA guard, the wheels and the versions. Returns an exit status to stop with, or None to go on."""
    args, res = check.args, StepResult("env")
    check.results["env"] = res
    res.started_s, t0 = round(check.elapsed(), 1), time.monotonic()
    base_env = {k: v for k, v in os.environ.items() if k != "SAE_SWEEP_ROOT"} | {"PYTHONPATH": str(REPO)}
    cuda, out = run_probe(PROBE_CUDA, base_env, timeout=120)
    res.metrics["cuda"] = cuda or {}
    if cuda is None:
        res.status, res.reason = "failed", "the torch probe did not answer"
        res.tails["probe"] = out.splitlines()[-TAIL_LINES:]
        res.wall_s = round(time.monotonic() - t0, 2)
        check.write()
        print(f"gpu_check: refused: could not import torch ({out.strip().splitlines()[-1:]})", file=sys.stderr)
        return 2
    if not cuda["cuda_available"]:
        if not args.allow_cpu:
            res.status = "refused"
            res.reason = (
                f"no CUDA device (torch {cuda['torch']}, CUDA build {cuda['cuda_build']}): this check needs a "
                "GPU; --allow-cpu runs it on the CPU for testing"
            )
            res.wall_s = round(time.monotonic() - t0, 2)
            check.write()
            print(f"gpu_check: refused: {res.reason}", file=sys.stderr)
            return 2
        check.device = "cpu"
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        res.metrics["driver"] = smi.stdout.strip().split(",")[0] if smi.returncode == 0 else None
    problems = install(check, res)
    versions, out = run_probe(PROBE_ENV, check.child_env(), timeout=120)
    res.tails["probe"] = out.strip().splitlines()[-TAIL_LINES:] if versions is None else []
    res.metrics |= versions or {}
    failed_imports = [m for m, v in ((versions or {}).get("imports") or {}).items() if not v["ok"]]
    corpus = (versions or {}).get("embedded_corpus") or {}
    if versions is not None and corpus.get("files", 0) < 100:
        problems.append(f"the embedded corpus is missing or thin here: {corpus}")
    if versions is None:
        problems.append("the package probe did not answer")
    if check.logger == "auto":
        check.logger = "none" if "wandb" in failed_imports else "wandb_offline"
        if "wandb" in failed_imports:
            res.metrics["warning"] = "wandb does not import: the runs log with logger=none"
    problems += [
        f"{m} does not import: {versions['imports'][m]['error']}"
        for m in failed_imports
        if not (m == "wandb" and check.logger == "none")
    ]
    res.status, res.reason = ("failed", "; ".join(problems)) if problems else ("ok", res.metrics.get("warning", ""))
    res.wall_s = round(time.monotonic() - t0, 2)
    check.write()
    return None


def version_tuple(text: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text or "")[:4])


def wheel_dist(path: Path) -> tuple[str, str]:
    """(distribution name as importlib.metadata spells it, version) from a wheel's file name."""
    name, version = path.name.split("-")[:2]
    return name.lower().replace("-", "_"), version


def acceptable(have: str | None, ranges: list) -> bool:
    """Whether an installed version lies in one of the [low, high) ranges (None: unbounded above)."""
    if have is None:
        return False
    v = version_tuple(have)
    return any(version_tuple(lo) <= v and (hi is None or v < version_tuple(hi)) for lo, hi in ranges)


def needed_extras(folder: Path, installed) -> tuple[list[Path], dict]:
    """The wheels of ``folder`` (``ifneeded/``) whose distribution the image lacks, or has at a version outside
    ``needs.json``'s ranges; and the image's versions that were kept. ``installed(dist)``: a version or None."""
    try:
        needs = json.loads((folder / "needs.json").read_text())
    except (OSError, json.JSONDecodeError):
        needs = {}
    extra, kept = [], {}
    for whl in sorted(folder.glob("*.whl")):
        dist, version = wheel_dist(whl)
        have = installed(dist)
        ranges = needs.get(dist) or [[version, None]]  # no rule: at least the wheel's own version
        if acceptable(have, ranges):
            kept[dist] = have
        else:
            extra.append(whl)
    return extra, kept


def installed_version(dist: str) -> str | None:
    from importlib import metadata  # noqa: PLC0415

    for name in (dist, dist.replace("_", "-")):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def install(check: Check, res: StepResult) -> list[str]:
    """Install the carried wheels into a site folder (or take --site); the problems found, if any."""
    args = check.args
    if args.site:
        check.site = Path(args.site).resolve()
        res.metrics["install"] = {"site": str(check.site), "installed": "given"}
        return [] if check.site.is_dir() else [f"--site {args.site} is not a folder"]
    wheels = Path(args.wheels)
    always = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if args.no_install or not always:
        res.metrics["install"] = {
            "installed": "nothing",
            "why": "--no-install" if args.no_install else f"no wheels in {wheels}",
        }
        return []
    extra, kept = needed_extras(wheels / IFNEEDED, installed_version)
    target = Path(args.site_target)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--no-cache-dir",
        "--upgrade",
        "--target",
        str(target),
        *map(str, always + extra),
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    check.site = target
    res.metrics["install"] = {
        "site": str(target),
        "wheels": len(always) + len(extra),
        "seconds": round(time.monotonic() - t0, 1),
        "ifneeded_installed": [w.name for w in extra],
        "ifneeded_kept_image": kept,
    }
    if proc.returncode != 0:
        res.tails["pip"] = (proc.stdout + proc.stderr).strip().splitlines()[-TAIL_LINES:]
        return [f"pip install of {wheels} exited {proc.returncode}"]
    return []


def plan(check: Check, probe_only: bool = False) -> dict[str, dict[str, list[Command]]]:
    """Every step's lanes of commands (roots under the work folder)."""
    args, dev, w = check.args, check.device, check.work
    common = [f"logger={check.logger if check.logger != 'auto' else 'wandb_offline'}", "trainer.progress_bar=false"]
    smoke = ["experiment=smoke"]
    pre = ["experiment=smoke"] if args.tiny else [f"pretrain.max_steps={args.pretrain_steps}"]
    sweep = ["-m", "experiment=demo", *trainer(dev), f"hydra.launcher.n_jobs={args.sweep_jobs}", *args.sweep_override]
    if args.tiny:
        sweep += [
            "harvest.n_tokens=20480",
            "harvest.n_val_tokens=4096",
            "sae.epochs=1",
            "sae.until=budget",
            "sae.dict_size=256,512",
            "sae.seed=0",  # two jobs, run side by side: the tiny plan only proves the path
        ]
    analysis = [f"analysis.device={dev}"] + (["analysis.n_boot=50", "analysis.n_perm=50"] if args.tiny else [])
    return {
        "kernels": {
            "kernels": [
                Command(
                    "gpu_kernels",
                    [
                        sys.executable,
                        str(REPO / "benchmarks" / "gpu_kernels.py"),
                        "--device",
                        dev,
                        "--json",
                        str(w / "kernels.json"),
                    ]
                    + (["--quick"] if args.tiny else []),
                )
            ]
        },
        "smoke": {
            "gpu": [
                Command("pretrain", train_cmd("stage=pretrain", *smoke, *trainer(dev), *common), w / "smoke"),
                Command("sae", train_cmd(*smoke, *trainer(dev), *common), w / "smoke"),
            ],
            "ddp": [
                Command("pretrain", train_cmd("stage=pretrain", *smoke, *trainer(dev, True), *common), w / "ddp"),
            ]
            + ([Command("sae", train_cmd(*smoke, *trainer(dev, True), *common), w / "ddp")] if args.ddp_sae else []),
        },
        "pretrain": {
            "gpu": [Command("pretrain", train_cmd("stage=pretrain", *pre, *trainer(dev), *common), w / "pretrain")]
        },
        "sweep": {"gpu": [Command("sweep", train_cmd(*sweep, *common), w / "sweep")]},
        "analyze": {
            "gpu": [Command("analyze", [sys.executable, str(REPO / "analyze.py"), *analysis, common[0]], w / "sweep")]
        },
    }


def run_plan(check: Check) -> None:
    args, lanes = check.args, plan(check)
    for name in STEPS[1:]:
        if name not in args.steps:
            continue
        if check.stop.is_set():
            check.results[name] = StepResult(name, status="skipped", reason="interrupted")
            continue
        if name == "kernels":
            check.run_step(name, lanes[name], parse=lambda done, res: _kernels_metrics(check))
        elif name == "smoke":
            check.run_step(name, lanes[name], parse=_smoke_metrics)
        elif name == "pretrain":
            check.run_step(name, lanes[name], parse=lambda done, res: _pretrain_metrics(check, done))
        elif name == "sweep":
            check.run_step(
                name,
                lanes[name],
                ready=lambda: _prepare_sweep(check),
                parse=lambda done, res: _sweep_metrics(check, res),
            )
        elif name == "analyze":
            check.run_step(
                name,
                lanes[name],
                ready=lambda: _analysis_ready(check),
                parse=lambda done, res: _analysis_metrics(check, done),
            )


def _kernels_metrics(check: Check) -> dict:
    path = check.work / "kernels.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _smoke_metrics(done: dict[str, list[CommandResult]], res: StepResult) -> dict:
    out = {}
    for lane, cmds in done.items():
        for c in cmds:
            lines = log_lines(c.log)
            info: dict = {}
            for _, _, _, msg in lines:
                if (m := GPT_DONE.match(msg)) is not None:
                    info = {"val_loss": float(m["val"])}
                elif (r := sae_result(msg)) is not None:
                    info = {k: r[k] for k in ("activations", "val_fvu", "val_l0", "dead_pct")}
            if any(re.search(r"already finished as", msg) for *_, msg in lines):
                info["reused"] = True  # a finished run's artifact: nothing was trained
            out[f"{lane}/{c.label}"] = info
    return out


def _pretrain_metrics(check: Check, done: dict[str, list[CommandResult]]) -> dict:
    (cmd,) = done["gpu"]
    return parse_pretrain(cmd.log, check.work / "pretrain") | {"command_s": round(cmd.wall_s, 2)}


def _prepare_sweep(check: Check) -> str | None:
    """Seed the sweep's root with the carried GPT (or else the pretrain step's); a reason to skip, or None."""
    src, root = Path(check.args.gpt_root), check.work / "sweep"
    check.info["sweep_gpt"] = None
    if not (src / "store").is_dir():
        fallback = check.work / "pretrain"
        if not check.ok("pretrain") or not (fallback / "store").is_dir():
            return f"no GPT to sweep on: {src} has no store/ and the pretrain step made none"
        src = fallback
        check.info["sweep_gpt"] = "the pretrain step's GPT (no carried one): figures do not compare with the CPU run"
    for part in ("store", "cache/tokens"):
        if (src / part).is_dir():
            shutil.copytree(src / part, root / part, dirs_exist_ok=True)
    check.info.setdefault("sweep_gpt_root", str(src))
    return None


def _sweep_metrics(check: Check, res: StepResult) -> dict:
    m = parse_sweep(check.work / "sweep", res.wall_s)
    m["jobs_at_once"] = check.args.sweep_jobs
    for job in m["jobs"]:  # each job's Hydra log in the report's tails, shortened
        if job.get("errors"):
            res.tails[f"job-{job['job']}"] = job["errors"]
    return m


def _analysis_ready(check: Check) -> str | None:
    sizes = {d["dict_size"] for d in dictionaries(check.work / "sweep")}
    if len(sizes) < 2:
        return f"the sweep left {len(sizes)} dictionary size(s) in the store; the analysis needs at least two"
    return None


def _analysis_metrics(check: Check, done: dict[str, list[CommandResult]]) -> dict:
    (cmd,) = done["gpu"]
    return parse_analysis(check.work / "sweep") | {"command_s": round(cmd.wall_s, 2)}


if __name__ == "__main__":
    sys.exit(main())
