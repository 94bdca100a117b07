"""``hydra/launcher=slurm``: resources sized from the trainer, and a request no node can meet refused up front.

``SlurmResources`` is a Hydra callback (conf/train.yaml's ``hydra.callbacks``; Hydra takes launchers only from its
``hydra_plugins`` namespace, callbacks from anywhere). Before a multirun instantiates its launcher, when that is
submitit's SLURM launcher, it:

* **Resources from the trainer.** Submitit reads resources from the base config, before sweep overrides apply. Left
  ``null`` there, they follow the ``trainer`` group: ``tasks_per_node`` = ``trainer.devices`` (one process per
  device; Lightning's DDP reads its rank from SLURM), ``gpus_per_node`` = ``trainer.devices`` on a GPU and none on
  the CPU (``--gpus-per-node=0`` is an invalid gres request), ``cpus_per_task`` = ``CPUS_PER_TASK`` by accelerator,
  ``mem_gb`` = ``MEM_GB_PER_TASK`` by accelerator x tasks. Any of them set (``hydra.launcher.cpus_per_task=8``) is
  kept as set.
* **A request no node can meet is refused before anything is submitted**, in one line naming the partition's nodes
  and what they offer (``sinfo``), instead of jobs pending forever (``Reason=PartitionConfig``) or a gres error.

A job that ends without a result (cancelled, failed, out of requeues) ends the sweep with one line naming the job,
its state and how to resume (``ended``, which the entry points' ``cli.run`` prints for submitit's
``UncompletedJobError``).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, flag_override

from sae_sweep.errors import ConfigError

log = logging.getLogger(__name__)

CPUS_PER_TASK = {"cpu": 1, "gpu": 4}  # a CPU job trains on one thread (as two jobs side by side do); a GPU job's
#                                       data loading and evaluation use a few
MEM_GB_PER_TASK = {"cpu": 4, "gpu": 16}  # the demo's largest CPU job peaks under 2 GB resident


def resources(params: dict, accelerator: str, devices: int) -> dict:
    """The launcher's parameters with every resource left ``None`` sized for the trainer."""
    out = dict(params)
    kind = "gpu" if accelerator == "gpu" else "cpu"
    if out.get("tasks_per_node") is None:
        out["tasks_per_node"] = devices
    if out.get("gpus_per_node") is None and kind == "gpu":
        out["gpus_per_node"] = devices
    if out.get("cpus_per_task") is None:
        out["cpus_per_task"] = CPUS_PER_TASK[kind]
    if out.get("mem_gb") is None:
        out["mem_gb"] = MEM_GB_PER_TASK[kind] * out["tasks_per_node"]
    return out


def nodes_offer(partition: str | None) -> list[dict] | None:
    """Each node of ``partition`` (the default one when None): name, CPUs, memory (MB), GPUs; None without sinfo."""
    if shutil.which("sinfo") is None:
        return None
    args = ["sinfo", "-h", "-N", "-o", "%N %c %m %G %P"] + (["-p", partition] if partition else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise ConfigError(f"sinfo cannot list the nodes of partition {partition or '(default)'}: {done.stderr.strip()}")
    nodes = []
    for line in done.stdout.splitlines():
        name, cpus, mem, gres, part = line.split()[:5]
        if partition is None and not part.endswith("*"):
            continue  # not the default partition
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:(,]+)?:(\d+)", gres))
        nodes.append({"name": name, "cpus": int(cpus), "mem_mb": int(mem.rstrip("+")), "gpus": gpus})
    return nodes


def check_fits(params: dict, nodes: list[dict] | None) -> None:
    """ConfigError in one line when no node of the partition can run one task set of the request."""
    if nodes is None:
        return  # no SLURM client here: submitit will say so
    where = f"partition {params.get('partition') or '(default)'}"
    if not nodes:
        raise ConfigError(f"{where} has no nodes (sinfo lists none): set hydra.launcher.partition= to one that has")
    cpus = params["cpus_per_task"] * params["tasks_per_node"]
    mem_mb = int(params["mem_gb"] * 1024)
    gpus = params.get("gpus_per_node") or 0
    fit = [n for n in nodes if n["cpus"] >= cpus and n["mem_mb"] >= mem_mb and n["gpus"] >= gpus]
    if len(fit) < (params.get("nodes") or 1):
        offer = ", ".join(f"{n['name']}: {n['cpus']} CPUs, {n['mem_mb']} MB, {n['gpus']} GPUs" for n in nodes[:4])
        raise ConfigError(
            f"no node of {where} can run this job: it asks {params.get('nodes') or 1} node(s) with {cpus} CPUs "
            f"({params['tasks_per_node']} tasks x {params['cpus_per_task']}), {mem_mb} MB and {gpus} GPUs each; "
            f"the nodes offer {offer}. Lower hydra.launcher.cpus_per_task / mem_gb / trainer.devices, or pick "
            "another hydra.launcher.partition"
        )


class SlurmResources(Callback):
    """Size a SLURM sweep's resources for its trainer and check that a node can meet them, before submitting."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        launcher = config.hydra.launcher
        if not str(launcher.get("_target_", "")).endswith("submitit_launcher.SlurmLauncher"):
            return  # joblib, submitit_local: nothing to size
        trainer = config.get("trainer") or {}
        params = resources(dict(launcher), str(trainer.get("accelerator", "cpu")), int(trainer.get("devices", 1)))
        with flag_override(config, ["readonly", "struct"], [False, False]):
            for key in ("tasks_per_node", "gpus_per_node", "cpus_per_task", "mem_gb"):
                launcher[key] = params[key]
        try:
            check_fits(params, nodes_offer(params.get("partition")))
        except ConfigError as exc:  # Hydra turns a callback's exception into a warning and goes on: exit here
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(exc.exit_code) from None
