"""What the entry points check before any work, in-process, for the config tests (test_rules.py, the config fuzz):
compose either config as Hydra does, then build and check its jobs as train.py / analyze.py would."""

from __future__ import annotations

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from sae_sweep import config

from .conftest import CONF

CONFIGS = ("train", "analyze")


def compose_config(name: str, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """conf/<name>.yaml composed with ``overrides``, as train.py or analyze.py composes it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name=name, overrides=list(overrides))


def check_train(cfg: DictConfig, machine: bool = True) -> None:
    """Every job train.py could run from ``cfg``, built and checked as its stage checks it before any work: the
    pretraining job (unless the data is synthetic, which has none) and the SAE job, whatever ``stage`` says, so that
    every key is read."""
    from sae_sweep.train import pretrain, sae_stage  # noqa: PLC0415

    config.stage(cfg)
    if not config._synthetic(cfg):
        pretrain.check(config.pretrain_job(cfg), machine=machine)
    sae_stage.check(config.sae_job(cfg), machine=machine)


def check_analyze(cfg: DictConfig, machine: bool = True) -> None:
    """The analysis job, built and checked as analyze.py checks it before collecting anything."""
    from sae_sweep.analysis import job  # noqa: PLC0415

    built = config.analyze_job(cfg)
    if machine:
        job.check(built)


CHECK = {"train": check_train, "analyze": check_analyze}


def check(name: str, cfg: DictConfig, machine: bool = True) -> None:
    """Every job of ``cfg`` checked (the fuzz: every key is read whatever ``stage`` says)."""
    CHECK[name](cfg, machine)


def check_entry(name: str, cfg: DictConfig, machine: bool = True) -> None:
    """What the entry point itself checks before any work: train.py the job of ``stage`` (as sweep_check does for
    every job of a multirun), analyze.py its job."""
    if name == "train":
        from sae_sweep.sweep_check import check_job  # noqa: PLC0415

        check_job(cfg, machine)
    else:
        check_analyze(cfg, machine)
