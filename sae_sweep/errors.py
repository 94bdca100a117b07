"""The errors a user can fix, and the status of a job that was asked to stop.

One policy everywhere: a problem the user can fix (a bad config value, a missing or corrupt file, an offline download)
raises one of these, with a message that names the key or the file and the fix, before any expensive work. The entry
points print the message as one line, without a traceback, and exit with ``exit_code``.
"""


class SaeSweepError(Exception):
    """A problem the user can fix. Entry points print it as one line and exit with status 2."""

    exit_code = 2


class ConfigError(SaeSweepError, ValueError):
    """A configuration value (or an argument of a library call) is missing, unknown or out of range."""


class DataError(SaeSweepError):
    """A corpus, cache, array or artifact is missing, too small, malformed, corrupt or unreachable."""


class TrainingError(SaeSweepError):
    """Training diverged (a NaN or infinite loss) or stopped early; the last good checkpoint is kept."""


class Interrupted(SaeSweepError):
    """The job was asked to stop (SIGTERM, as SLURM sends before pre-emption) and saved a checkpoint first.

    Entry points exit with 128 + SIGTERM = 143, the status a shell and SLURM give a job killed by SIGTERM, so
    launchers treat it as interrupted, not failed by bad input; rerunning the same command resumes.
    """

    exit_code = 143
