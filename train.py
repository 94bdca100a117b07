"""Train sae-sweep's models. `python train.py --help` lists the config groups; README.md explains them."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from sae_sweep import SaeSweepError

log = logging.getLogger("sae_sweep")


def run(cfg: DictConfig):
    """Compose-time config -> checked dataclasses -> the stage's work. Usable from tests and notebooks."""
    # torch and Lightning load here, after Hydra has checked the overrides: a typo fails in under a second.
    from sae_sweep import config, pretrain, sweep  # noqa: PLC0415

    stage = config.stage(cfg)
    if stage == "pretrain":
        return pretrain.run(config.pretrain_job(cfg))
    return sweep.run(config.sae_job(cfg))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except SaeSweepError as exc:  # a problem the user can fix: say it plainly, no traceback
        log.error("%s", exc)
        sys.exit(getattr(exc, "exit_code", 2))


if __name__ == "__main__":
    main()
