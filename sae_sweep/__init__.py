"""sae-sweep: which sparse-autoencoder features are real?

Data flows one way: text -> tokens (data.py) -> GPT (model.py, lit.py) -> MLP activations
-> SAE dictionaries -> artifacts (artifacts.py) -> analysis.
"""

__version__ = "0.1.0"


class SaeSweepError(Exception):
    """A problem the user can fix (bad config, missing file, offline download).

    Entry points print these as one clear message, without a traceback.
    """


class ConfigError(SaeSweepError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(SaeSweepError):
    """A corpus, cache or artifact is missing, too small, corrupt or unreachable."""


class TrainingError(SaeSweepError):
    """Training diverged (a NaN or infinite loss); the last good checkpoint is kept."""


class Interrupted(SaeSweepError):
    """The job was asked to stop (SIGTERM, as SLURM sends before pre-emption) and saved a checkpoint first.

    Entry points exit with 128 + SIGTERM = 143, the status a shell and SLURM give a job killed by SIGTERM, so
    launchers treat it as interrupted, not failed by bad input; rerunning the same command resumes.
    """

    exit_code = 143
