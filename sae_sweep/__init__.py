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
