"""The one place a Hydra/OmegaConf config becomes the plain dataclasses the library takes.

Every section is checked here: an unknown key, a value of the wrong type or a value out of range ends the run before
any work, with a ConfigError that names the key and what it accepts; then the rules between keys (rules.py) are
checked on the job built. Each side is imported only by the function that builds its job, so ``analyze.py`` never
loads Lightning and ``train.py`` never loads the analysis.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from sae_sweep import rules
from sae_sweep.errors import ConfigError
from sae_sweep.files import json_digest
from sae_sweep.store import Paths
from sae_sweep.tracking import LoggerConfig
from sae_sweep.truth import CORPUS as SYNTHETIC
from sae_sweep.truth import SyntheticConfig

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


def build(cls, node, section: str, hint: str = ""):
    """Make dataclass ``cls`` from the config section ``section`` (a DictConfig or dict); ``hint`` ends the message
    about unknown keys (what chose ``cls``)."""
    if not isinstance(node, (DictConfig, dict)):
        raise ConfigError(f"{section} must be a section of keys, got {node!r}; pick one with {section}=<choice>")
    values = _resolved(node, section) if isinstance(node, DictConfig) else dict(node)
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown}; allowed keys: {fields}{hint}")
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def _resolved(node: DictConfig, section: str) -> dict:
    """The section as a plain dict, interpolations resolved; one that cannot be is named by its key."""
    try:
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:  # a ??? in the yaml (data=text_files's data.paths)
        raise ConfigError(f"{exc.full_key} must be given (its config has ??? there): set {exc.full_key}=") from None
    except OmegaConfBaseException as exc:  # an interpolation that does not resolve
        raise ConfigError(f"{getattr(exc, 'full_key', None) or section}: {exc}".splitlines()[0]) from None


def _section(cfg: DictConfig, name: str):
    if name not in cfg:
        raise ConfigError(f"the config has no '{name}' section; pick one with {name}=<choice>")
    return _get(cfg, name)


def _get(node, key: str, default=None, where: str | None = None):
    """``node[key]`` resolved (``default`` when absent); an interpolation that does not resolve names the key."""
    try:
        return node.get(key, default)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where or key}: {exc}".splitlines()[0]) from None


def stage(cfg: DictConfig) -> str:
    value = _get(cfg, "stage")
    if not isinstance(value, str) or value not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {value!r}")
    return value


def _paths(cfg: DictConfig) -> Paths:
    root = build(_PathsNode, _section(cfg, "paths"), "paths").root
    if not root.strip():  # "" would put cache/, store/ and runs/ in the current folder
        raise ConfigError(f"paths.root must name a folder, got {root!r}; set paths.root or $SAE_SWEEP_ROOT")
    return Paths(Path(root).expanduser().resolve())


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
        "ckpt_path": _coerce(_get(cfg, "ckpt_path", "last"), str | None, "ckpt_path"),
        "force": _coerce(_get(cfg, "force", False), bool, "force"),
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
    return isinstance(data, (DictConfig, dict)) and _get(data, "corpus", where="data.corpus") == SYNTHETIC


def _data(cfg: DictConfig):
    """The data section: the generator's settings for data=synthetic, else the corpus's."""
    from sae_sweep.train.corpus import DataConfig  # noqa: PLC0415 - the training side, only for a training job

    node, synthetic = _section(cfg, "data"), _synthetic(cfg)
    corpus = _get(node, "corpus", where="data.corpus") if isinstance(node, (DictConfig, dict)) else None
    experiment = _experiment()
    hint = (
        f" (the keys of data.corpus={corpus!r}: experiment={experiment} sets data keys for its own data, which "
        "this data does not take: drop the experiment, or the data=<option>)"
        if experiment
        else f" (the keys of data.corpus={corpus!r}: pick the data with data=<option>)"
    )
    return build(SyntheticConfig if synthetic else DataConfig, node, "data", hint)


def _experiment() -> str | None:
    """The experiment=<option> of the Hydra run composing the config, if any (None outside one)."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415 - only set inside a Hydra run

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("experiment")


def pretrain_job(cfg: DictConfig):
    """The pretraining stage's job (``sae_sweep.train.jobs.PretrainJob``); the rules between its keys checked
    (rules.py: data=synthetic, say, has no GPT to pretrain)."""
    from sae_sweep.train.gpt import GPTConfig  # noqa: PLC0415 - the training side, only for a training job
    from sae_sweep.train.jobs import PretrainConfig, PretrainJob  # noqa: PLC0415

    job = PretrainJob(
        data=_data(cfg),
        model=build(GPTConfig, _section(cfg, "model"), "model"),
        pretrain=build(PretrainConfig, _section(cfg, "pretrain"), "pretrain"),
        ready_made=_coerce(_get(cfg, "ready_made", True), bool, "ready_made"),
        **_training(cfg),
    )
    rules.enforce(rules.pretrain_view(job))
    return job


def sae_job(cfg: DictConfig):
    """The SAE stage's job (``sae_sweep.train.jobs.SAEJob``). data=synthetic adds the generator's config (and
    takes no GPT); gpt=untrained adds the pretraining job whose seeded initialisation is the control GPT."""
    from sae_sweep.train.harvest import HarvestConfig  # noqa: PLC0415 - the training side, only for a training job
    from sae_sweep.train.jobs import UNTRAINED, SAEJob  # noqa: PLC0415
    from sae_sweep.train.sae_config import SAEConfig  # noqa: PLC0415

    gpt = _coerce(_get(cfg, "gpt"), str | None, "gpt")
    synthetic = untrained = None
    if _synthetic(cfg):
        synthetic = _data(cfg)  # with a gpt= too: a rule refuses the pair below
    elif gpt == UNTRAINED:
        untrained = pretrain_job(cfg)
    job = SAEJob(
        harvest=build(HarvestConfig, _section(cfg, "harvest"), "harvest"),
        sae=build(SAEConfig, _section(cfg, "sae"), "sae"),
        gpt=gpt,
        synthetic=synthetic,
        untrained=untrained,
        **_training(cfg),
    )
    rules.enforce(rules.sae_view(job))
    return job


def analyze_job(cfg: DictConfig):
    """The analysis stage's job (``sae_sweep.analysis.settings.AnalyzeJob``)."""
    from sae_sweep.analysis.collect import SourceConfig  # noqa: PLC0415 - the analysis side, only for analysis
    from sae_sweep.analysis.settings import AnalysisConfig, AnalyzeJob  # noqa: PLC0415

    out_dir = _coerce(_get(cfg, "out_dir"), str | None, "out_dir")
    job = AnalyzeJob(
        analysis=build(AnalysisConfig, _section(cfg, "analysis"), "analysis"),
        source=build(SourceConfig, _section(cfg, "source"), "source"),
        logger=build(LoggerConfig, _section(cfg, "logger"), "logger"),
        paths=_paths(cfg),
        out_dir=Path(out_dir).expanduser().resolve() if out_dir else None,
    )
    rules.enforce(rules.analyze_view(job))
    return job


@dataclasses.dataclass(frozen=True)
class _PathsNode:
    root: str
