"""The one place a Hydra/OmegaConf config becomes the plain dataclasses the library takes.

Every section is checked here: an unknown key, a value of the wrong type or a value out of range ends the run before
any work, with a ConfigError that names the key and what it accepts. Each side is imported only by the function that
builds its job, so ``analyze.py`` never loads Lightning and ``train.py`` never loads the analysis.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sae_sweep.errors import ConfigError
from sae_sweep.files import json_digest
from sae_sweep.store import Paths
from sae_sweep.tracking import LoggerConfig
from sae_sweep.truth import CORPUS as SYNTHETIC

STAGES = ("pretrain", "sae")
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp`` and return it in that type (lists -> tuples)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (inner, _) = typing.get_args(tp)
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        Path: lambda v: isinstance(v, (str, Path)),
    }[tp](value)
    if not ok:
        raise ConfigError(f"{key} must be {_TYPE_NAMES[tp]}, got {value!r}")
    return tp(value)


def build(cls, node, section: str):
    """Make dataclass ``cls`` from the config section ``section`` (a DictConfig or dict)."""
    try:
        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{section}: {exc}".splitlines()[0]) from None
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown}; allowed keys: {fields}")
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def _section(cfg: DictConfig, name: str):
    if name not in cfg:
        raise ConfigError(f"the config has no '{name}' section; pick one with {name}=<choice>")
    return cfg[name]


def stage(cfg: DictConfig) -> str:
    value = cfg.get("stage")
    if value not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {value!r}")
    return value


def _paths(cfg: DictConfig) -> Paths:
    return Paths(Path(build(_PathsNode, _section(cfg, "paths"), "paths").root).expanduser().resolve())


def _training(cfg: DictConfig) -> dict:
    """What both training stages take: trainer, logger, paths and the rerun switches."""
    from sae_sweep.train.jobs import TrainerConfig  # noqa: PLC0415

    trainer = build(TrainerConfig, _section(cfg, "trainer"), "trainer")
    if trainer.progress_bar and _jobs_side_by_side():  # several live bars on one terminal overwrite each other
        trainer = dataclasses.replace(trainer, progress_bar=False)
    logger = build(LoggerConfig, _section(cfg, "logger"), "logger")
    if logger.group is None and (sweep := sweep_name()) is not None:
        logger = dataclasses.replace(logger, group=sweep)
    return {
        "trainer": trainer,
        "logger": logger,
        "paths": _paths(cfg),
        "ckpt_path": _coerce(cfg.get("ckpt_path", "last"), str | None, "ckpt_path"),
        "force": _coerce(cfg.get("force", False), bool, "force"),
    }


# Overrides that change where or how a sweep is logged, not what it trains: left out of its identity.
_NOT_IDENTITY = ("paths.", "logger.", "hydra.", "trainer.progress_bar", "ckpt_path", "force", "experiment")


def sweep_name(task: list[str] | None = None, experiment: str | None = None) -> str | None:
    """A multirun's W&B group: its experiment and a digest of its command line as typed (``sae.dict_size=64,128``,
    read from the sweep's multirun.yaml), so that every job of one sweep, and every rerun of the same command, land in
    one group; None outside a multirun. ``task`` and ``experiment`` give them directly (tests)."""
    if task is None:
        from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415 - only set inside a Hydra run
        from hydra.types import RunMode  # noqa: PLC0415

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return None
        hc = HydraConfig.get()
        saved = Path(str(hc.sweep.dir)) / "multirun.yaml"
        task = list(OmegaConf.load(saved).hydra.overrides.task) if saved.exists() else list(hc.overrides.task)
        experiment = hc.runtime.choices.get("experiment")
    kept = sorted(o for o in task if not o.lstrip("+~").startswith(_NOT_IDENTITY))
    return f"{experiment or 'sweep'}" + (f"-{json_digest(kept)[:8]}" if kept else "")


def _jobs_side_by_side() -> bool:
    """True in a job of a multirun whose launcher runs several jobs at once (``hydra/launcher=parallel``): the
    launcher then prints a line per finished job instead of each job drawing its own progress bar."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415 - only set inside a Hydra run

    if not HydraConfig.initialized():
        return False
    launcher = HydraConfig.get().launcher
    return "joblib" in str(launcher.get("_target_", "")).lower() and launcher.get("n_jobs", 1) != 1


def _synthetic(cfg: DictConfig) -> bool:
    data = _section(cfg, "data")
    return isinstance(data, (DictConfig, dict)) and data.get("corpus") == SYNTHETIC


def pretrain_job(cfg: DictConfig):
    """The pretraining stage's job (``sae_sweep.train.jobs.PretrainJob``)."""
    from sae_sweep.train.corpus import DataConfig  # noqa: PLC0415 - the training side, only for a training job
    from sae_sweep.train.gpt import GPTConfig  # noqa: PLC0415
    from sae_sweep.train.jobs import PretrainConfig, PretrainJob  # noqa: PLC0415

    if _synthetic(cfg):
        raise ConfigError(
            "data=synthetic: there is no GPT to pretrain on synthetic data, whose activations are generated "
            "directly. Train SAEs on them with `python train.py data=synthetic` (one job) or "
            "`python train.py -m experiment=synthetic` (the sweep); drop stage=pretrain"
        )
    return PretrainJob(
        data=build(DataConfig, _section(cfg, "data"), "data"),
        model=build(GPTConfig, _section(cfg, "model"), "model"),
        pretrain=build(PretrainConfig, _section(cfg, "pretrain"), "pretrain"),
        ready_made=_coerce(cfg.get("ready_made", True), bool, "ready_made"),
        **_training(cfg),
    )


def sae_job(cfg: DictConfig):
    """The SAE stage's job (``sae_sweep.train.jobs.SAEJob``). data=synthetic adds the generator's config (and
    takes no GPT); gpt=untrained adds the pretraining job whose seeded initialisation is the control GPT."""
    from sae_sweep.train.harvest import HarvestConfig  # noqa: PLC0415 - the training side, only for a training job
    from sae_sweep.train.jobs import UNTRAINED, SAEJob  # noqa: PLC0415
    from sae_sweep.train.sae_config import SAEConfig  # noqa: PLC0415
    from sae_sweep.truth import SyntheticConfig  # noqa: PLC0415

    gpt = _coerce(cfg.get("gpt"), str | None, "gpt")
    synthetic = untrained = None
    if _synthetic(cfg):
        synthetic = build(SyntheticConfig, cfg.data, "data")
        if gpt is not None:
            raise ConfigError(f"gpt={gpt}: data=synthetic generates the activations, there is no GPT to use; drop gpt=")
    elif gpt == UNTRAINED:
        untrained = pretrain_job(cfg)
    return SAEJob(
        harvest=build(HarvestConfig, _section(cfg, "harvest"), "harvest"),
        sae=build(SAEConfig, _section(cfg, "sae"), "sae"),
        gpt=gpt,
        synthetic=synthetic,
        untrained=untrained,
        **_training(cfg),
    )


def analyze_job(cfg: DictConfig):
    """The analysis stage's job (``sae_sweep.analysis.settings.AnalyzeJob``)."""
    from sae_sweep.analysis.collect import SourceConfig  # noqa: PLC0415 - the analysis side, only for analysis
    from sae_sweep.analysis.settings import AnalysisConfig, AnalyzeJob  # noqa: PLC0415

    out_dir = _coerce(cfg.get("out_dir"), str | None, "out_dir")
    return AnalyzeJob(
        analysis=build(AnalysisConfig, _section(cfg, "analysis"), "analysis"),
        source=build(SourceConfig, _section(cfg, "source"), "source"),
        logger=build(LoggerConfig, _section(cfg, "logger"), "logger"),
        paths=_paths(cfg),
        out_dir=Path(out_dir).expanduser().resolve() if out_dir else None,
    )


@dataclasses.dataclass(frozen=True)
class _PathsNode:
    root: str
