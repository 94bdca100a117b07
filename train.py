"""Train sae-sweep's models. `python train.py --help` lists the config groups; the docs (docs/) explain them."""

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sae_sweep import cli
from sae_sweep.errors import SaeSweepError

log = logging.getLogger("sae_sweep")


def run(cfg: DictConfig):
    """Compose-time config -> checked dataclasses -> the stage's work. Usable from tests and notebooks."""
    # torch loads here, after Hydra has checked the overrides, and Lightning once the job is built and checked: a
    # typo fails in under a second, a bad value in about one (tests/test_layout.py holds both).
    from sae_sweep import config, rules  # noqa: PLC0415

    if config.stage(cfg) == "pretrain":
        job = config.pretrain_job(cfg)
        rules.enforce(rules.pretrain_view(job), machine=True)  # and what this machine offers (devices)
        from sae_sweep.train import pretrain  # noqa: PLC0415

        return pretrain.run(job)
    job = config.sae_job(cfg)
    rules.enforce(rules.sae_view(job), machine=True)  # devices, and memory for the SAE (a floor before the GPT's width)
    from sae_sweep.train import sae_stage  # noqa: PLC0415

    return sae_stage.run(job)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except SaeSweepError as exc:  # a problem the user can fix: say it plainly, no traceback
        log.error("%s", exc)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    cli.run(  # bad overrides: one line and status 2, as bad values
        main,
        Path(__file__).resolve().parent / "conf",
        kept="; run the same command again to go on: training resumes from its last checkpoint, and the jobs that "
        "finished are not trained again",
    )
