"""Compare a sweep's SAE dictionaries and reproduce the note's figures. `python analyze.py --help` lists the options."""

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sae_sweep import cli
from sae_sweep.errors import SaeSweepError

log = logging.getLogger("sae_sweep")


def run(cfg: DictConfig):
    """Compose-time config -> checked dataclasses -> the report. Usable from tests and notebooks."""
    from sae_sweep import config  # noqa: PLC0415 - heavy imports after Hydra checked the overrides

    checked = config.analyze_job(cfg)  # a bad value is refused here, before the measures and torch load
    from sae_sweep.analysis import job  # noqa: PLC0415

    return job.run(checked)


@hydra.main(version_base="1.3", config_path="conf", config_name="analyze")
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
        kept=": the report folder from before, if there was one, is as it was",
    )
