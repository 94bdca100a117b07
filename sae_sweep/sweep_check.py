"""Every job of a multirun checked before the first one starts: a bad value late in a ``-m`` list is refused in one
line before the earlier jobs have trained (a Hydra callback, ``hydra.callbacks.check_every_job`` in conf/train.yaml).

The jobs are expanded as Hydra's basic sweeper expands them (the experiment's ``hydra.sweeper.params``, then the
command line's overrides, as a cartesian product), each job's config is composed by Hydra's own config loader, and
the job is built and checked as ``train.py`` would (``config.sae_job`` / ``config.pretrain_job``, then
``sae_stage.check`` / ``pretrain.check``: every rule of rules.py, and what this machine offers unless a SLURM launcher
runs the jobs elsewhere): values only, no file is read or written. Another sweeper's jobs are left to it.
"""

from __future__ import annotations

import itertools
import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sae_sweep.errors import SaeSweepError


def job_overrides(config: DictConfig) -> list[tuple[str, ...]]:
    """Each job's overrides, in the order the basic sweeper runs them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415

    params = config.hydra.sweeper.get("params") or {}
    given = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    by_key: dict[str, list[str]] = {}  # as the sweeper keys them: a later override of a key replaces an earlier one
    for o in OverridesParser.create().parse_overrides(given):
        key = o.get_key_element()
        if o.is_sweep_override():
            by_key[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            by_key[key] = [o.input_line or f"{key}={o.get_value_element_as_str()}"]
    return list(itertools.product(*by_key.values()))


def check_job(cfg: DictConfig, machine: bool = True) -> None:
    """Build the job ``train.py`` would run from ``cfg`` and check its values as its stage does before any work
    (SaeSweepError if one is bad); ``machine``: also against this machine, where the job will run."""
    from sae_sweep import config  # noqa: PLC0415

    if config.stage(cfg) == "pretrain":
        from sae_sweep.train import pretrain  # noqa: PLC0415

        pretrain.check(config.pretrain_job(cfg), machine=machine)
        return
    from sae_sweep.train.sae_stage import check  # noqa: PLC0415

    check(config.sae_job(cfg), machine=machine)


def runs_here(config: DictConfig) -> bool:
    """Whether the sweep's jobs run on this machine: not under SLURM's launcher, whose jobs run on other nodes (their
    devices and memory are checked there, when each job starts)."""
    return "slurm" not in str((config.hydra.get("launcher") or {}).get("_target_", "")).lower()


class CheckEveryJob(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return
        from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415

        try:
            loader = GlobalHydra.instance().config_loader()
            jobs = [(o, loader.load_sweep_config(config, list(o))) for o in job_overrides(config)]
        except Exception:  # noqa: BLE001 - what Hydra cannot expand or compose, Hydra itself reports
            return
        here = runs_here(config)
        seen: dict[tuple[str, ...], int] = {}
        for number, (overrides, _) in enumerate(jobs):  # one job twice: the second would find the first's run folder
            again = seen.setdefault(tuple(sorted(overrides)), number)
            if again != number:
                print(f"error: jobs #{again} and #{number} of the sweep are the same job ({' '.join(overrides)}): a "
                      "value is listed twice; list each once", file=sys.stderr)  # fmt: skip
                raise SystemExit(2)
        for number, (overrides, cfg) in enumerate(jobs):
            try:
                check_job(cfg, machine=here)
            except SaeSweepError as exc:  # Hydra turns a callback's exception into a warning and goes on: exit here
                print(f"error: job #{number} ({' '.join(overrides)}), before any job ran: {exc}", file=sys.stderr)
                raise SystemExit(exc.exit_code) from None
