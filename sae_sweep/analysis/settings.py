"""The analysis's settings: what ``conf/analyze.yaml``'s ``analysis`` node becomes (every field is there), and the
job ``analyze.py`` runs. Neither imports the measures or torch, so a bad value is refused before they load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sae_sweep.analysis.collect import SourceConfig
from sae_sweep.errors import ConfigError
from sae_sweep.store import Paths
from sae_sweep.tracking import LoggerConfig

VERDICT_NULLS = ("auto", "isotropic", "reference", "moment", "rows")


@dataclass(frozen=True)
class AnalysisConfig:
    layer: int = 2  # which layer's dictionaries to compare
    reference: int | None = None  # dict size every smaller one is scored against; None: the largest (the note: 8192)
    featured: int | None = None  # dict size of the single-size figures (the note: 1024); None: closest to 1024
    cutoff: float | None = None  # EMDs compare the MCS < cutoff part (the low mode); None: the threshold's value
    threshold: float = 0.5  # MCS >= threshold counts as high-MCS
    n_random: int = 4  # random dictionary pairs per size (Rand 1..R of the note)
    seed: int = 0  # random baselines
    chunk_size: int = 4096  # rows of A per MCS block: memory is chunk_size x |B| floats
    device: str | None = None  # MCS device; None: CUDA when available
    bins: int = 50
    # Beyond the note (issue 6)
    variant: str | None = None  # the main run: "" = the note's setup; None: "" when present, else the only variant
    controls: bool = True  # also analyse every other variant found (untrained GPT, resampling, l1, synthetic)
    n_boot: int = 1000  # bootstrap replicates (features resampled) for every EMD interval
    n_perm: int = 1000  # relabellings of each permutation test (learned low mode against a null)
    level: float = 0.95  # confidence level of the bootstrap intervals
    null_quantile: float = 0.999  # the principled split: MCS above this quantile of the exact null is high
    stay_cosine: float = 0.99  # a feature whose decoder has cosine >= this with its initial direction never left
    shared_cosine: float = 0.7  # cross-seed Hungarian matches at or above this count as shared (Paulo & Belrose)
    recovered_cosine: float = 0.9  # synthetic data: a true feature is recovered at MCS above this
    hungarian_max: int = 8192  # Hungarian matching only for dictionaries up to this size (it builds J x M matrices)
    # Which features are real, one by one (issue 29: measures/verdicts.py)
    fdr: float = 0.05  # Benjamini-Hochberg level over each dictionary's features
    min_replications: int = 1  # real: found again in at least this many other seeds
    verdict_null: str = "auto"  # auto: the largest p of the isotropic, reference and (with the activation cache) the
    #                             data-moment nulls; or one alone: isotropic | reference | moment | rows
    null_rows: int = 4096  # null queries per reference, to which the null's (K, M) is fitted
    match_cosine: float = 0.95  # found again: beyond the null, and at least this close (the same direction), where no
    #                             calibration of the variant's dictionaries is at hand (measures/calibration.py)
    calibrate: bool = False  # calibrate the match floor of each size on a parametric bootstrap (trains 2 SAEs a size)
    calibration_truth: str = "largest"  # the bootstrap's true features: the first seed's largest dictionary's atoms,
    #                                     or (own) each size's own first-seed dictionary's
    calibration_precision: float = 0.95  # the floor chosen: the lowest whose real calls were this precise on it
    calibration_activations: int | None = None  # bootstrap rows each of its SAEs trains on: None, as many as the
    #                                             analysed dictionary saw (1M where it says not); else at most this
    only: str | None = None  # a dictionary (name) or one feature (name:index): print its rows, write no report

    def __post_init__(self) -> None:
        if self.calibration_truth not in ("largest", "own"):
            raise ConfigError(f"analysis.calibration_truth must be largest or own, got {self.calibration_truth!r}")
        if self.verdict_null not in VERDICT_NULLS:
            raise ConfigError(f"analysis.verdict_null must be one of {VERDICT_NULLS}, got {self.verdict_null!r}")
        ints = (
            "n_random",
            "chunk_size",
            "bins",
            "n_boot",
            "n_perm",
            "hungarian_max",
            "min_replications",
            "null_rows",
            "calibration_activations",
        )
        for name in ints:
            value = getattr(self, name)
            if value is None and name == "calibration_activations":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"analysis.{name} must be a positive integer, got {value!r}")
        if not 0 <= self.seed < 2**63:  # numpy's seed: a negative one fails inside the measures
            raise ConfigError(f"analysis.seed must be an integer in [0, 2^63), got {self.seed!r}")
        if self.null_rows < 20:
            raise ConfigError(
                f"analysis.null_rows must be at least 20 (the null's tail is fitted to them), got {self.null_rows}"
            )
        if self.cutoff is None and -1.0 < self.threshold <= 1.0:  # one number splits high from low unless the user
            object.__setattr__(self, "cutoff", self.threshold)  # asks for two (a bad threshold is named below)
        for name in ("threshold", "cutoff", "stay_cosine", "shared_cosine", "recovered_cosine", "match_cosine"):
            if not -1.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"analysis.{name} must be in (-1, 1], got {getattr(self, name)!r}")
        for name in ("level", "null_quantile", "fdr", "calibration_precision"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"analysis.{name} must be in (0, 1), got {getattr(self, name)!r}")


@dataclass(frozen=True)
class AnalyzeJob:
    analysis: AnalysisConfig
    source: SourceConfig
    logger: LoggerConfig
    paths: Paths
    out_dir: Path | None = None  # None: <paths.root>/analysis

    @property
    def out(self) -> Path:
        return self.out_dir or self.paths.root / "analysis"
