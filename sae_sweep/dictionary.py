"""A dictionary folder: the contract between training and analysis.

One trained SAE is one folder (a store version, or any folder ``write_dictionary`` filled)::

    sae.safetensors     decoder (d_in, dict_size), decoder_init, encoder.weight, encoder.bias (, decoder_bias)
    config.json         DictionaryConfig: what was trained, on what, how, and its held-out metrics
    firing_counts.npy   (dict_size,) int64: held-out activations on which each feature fired
    metrics.csv, feature_density.png   training curves and the firing histogram (optional)
    snapshots.safetensors   decoder.<steps> (d_in, dict_size), fired.<steps> (dict_size,): the budget axis (optional;
                            their metrics in config.json's training.snapshots; see train/snapshots.py)
    saelens/            the same SAE in SAELens' format (cfg.json, sae_weights.safetensors, sparsity.safetensors):
                        ``sae_lens.SAE.load_from_disk(<folder>/saelens)`` opens it (written by the SAE stage, through
                        interop/saelens.py)

``DictionaryConfig`` is the config.json schema: the SAE stage writes one, the analysis reads one back, and a
folder that lacks a field is refused with its name and the folder's, never read with a silent default.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sae_sweep.errors import DataError
from sae_sweep.store import MANIFEST, verify

DICTIONARY_TYPE = "sae-dictionary"
SAE_WEIGHTS_FILE, SAE_CONFIG_FILE, COUNTS_FILE = "sae.safetensors", "config.json", "firing_counts.npy"
SNAPSHOTS_FILE = "snapshots.safetensors"
DECODER_ORIENTATION = "decoder: (d_in, dict_size); column j is feature j, unit norm (the note's D)"


def dictionary_name(layer: int, dict_size: int, seed: int, variant: str = "") -> str:
    """``sae-L2-J1024-s0``; a control run adds its variant: ``sae-L2-J1024-s0-untrained``."""
    return f"sae-L{layer}-J{dict_size}-s{seed}" + (f"-{variant}" if variant else "")


@dataclass(frozen=True)
class DictionaryConfig:
    """config.json of a dictionary folder. Field order is the file's key order."""

    name: str  # the artifact name, dictionary_name(layer, dict_size, seed, variant)
    variant: str  # "" for the note's setup; "untrained", "resample", "l1-0.0003", "synthetic-l1-0.005", ...
    d_in: int  # activation width
    layer: int  # the GPT layer whose MLP activations it encodes
    dict_size: int
    seed: int  # the SAE's initialisation seed
    l1_coeff: float
    sae: dict  # every SAEConfig field
    harvest: dict  # every HarvestConfig field (n_tokens, n_val_tokens, ...)
    gpt: dict | None  # {"artifact": "gpt-embedded-s0:v0", "digest": sha256 of its weights, "val_loss": nats/token}
    #                   None on synthetic data
    synthetic: dict | None  # SyntheticConfig fields + "features" (the true-features artifact); None on a GPT
    activations: dict  # {"key": activation cache key, "digest": sha256 of train.npy, "n_tokens": rows trained on}
    steps: int  # optimizer steps taken
    n_resampled: int  # dead features resampled in training (0 unless sae.resample_every > 0)
    run_id: str  # the training run's folder under runs/
    metrics: dict  # held-out metrics: val/mse, val/l1, val/loss, val/l0, val/fvu, val/dead_fraction
    training: dict  # how training ended (train/convergence.py): until, converged, converged_at_step, steps,
    #                 activations_seen, last_improvement, last_drift, window, loss_tol, drift_tol, evaluations

    REQUIRED_NESTED = {
        "harvest": ("n_val_tokens",),
        "activations": ("key",),
        "metrics": ("val/fvu", "val/l0", "val/dead_fraction"),
        "training": ("converged", "activations_seen"),
    }

    @property
    def n_val_tokens(self) -> int:
        """How many held-out activations the firing counts were taken over."""
        return int(self.harvest["n_val_tokens"])

    @property
    def converged(self) -> bool:
        """Whether training met its stopping rule (``training.converged``) before its cap."""
        return bool(self.training["converged"])

    @property
    def imported(self) -> bool:
        """Trained by another library and read by ``interop/foreign.py``: no training record, held-out metrics,
        activation cache or initial decoder."""
        return "imported" in self.training

    @property
    def gpt_artifact(self) -> str | None:
        return None if self.gpt is None else self.gpt.get("artifact")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict, where: Path | str) -> DictionaryConfig:
        """The schema from a parsed config.json; a missing field raises DataError naming it and ``where``."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        for key, inner in cls.REQUIRED_NESTED.items():
            if isinstance(data.get(key), dict):
                missing += [f"{key}.{k}" for k in inner if k not in data[key]]
        if missing:
            raise DataError(
                f"the dictionary in {where} has a config.json without {', '.join(missing)}: it was written by an "
                "older sae-sweep or edited by hand. Train it again (`python train.py ... force=true`)."
            )
        return cls(**{n: data[n] for n in names})


def write_dictionary(
    folder: Path, tensors: dict, config: DictionaryConfig, firing_counts, extra_files: dict | None = None
) -> None:
    """Fill ``folder`` with one dictionary: ``tensors`` (the SAE's, decoder (d_in, J) and decoder_init included; see
    ``SparseAutoencoder.state_tensors``), its config and its firing counts. ``extra_files`` maps a file name in the
    folder to a source path to copy (metrics.csv, a histogram)."""
    import numpy as np  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    save_file(tensors, str(folder / SAE_WEIGHTS_FILE), metadata={"orientation": DECODER_ORIENTATION})
    (folder / SAE_CONFIG_FILE).write_text(config.to_json())
    np.save(folder / COUNTS_FILE, np.asarray(firing_counts, dtype=np.int64))
    for name, src in (extra_files or {}).items():
        shutil.copyfile(src, folder / name)


@dataclass(frozen=True)
class Snapshot:
    """The dictionary as it was after ``steps`` optimizer steps (``activations_seen`` activations)."""

    steps: int
    activations_seen: int
    decoder: object  # torch.Tensor (d_in, dict_size), unit columns
    fired: object  # np.ndarray (dict_size,) int64: rows of the sae.eval_rows held-out sample each feature fired on
    metrics: dict  # held-out loss, mse, fvu, l0, dead_fraction on that sample


@dataclass
class Dictionary:
    """A trained SAE as arrays: ``decoder`` is the note's D, (d_in, dict_size) with unit-norm columns."""

    name: str
    decoder: object  # torch.Tensor (d_in, dict_size)
    tensors: dict  # every stored tensor, decoder_init and the encoder included
    config: DictionaryConfig
    firing_counts: object  # np.ndarray (dict_size,): held-out activations on which each feature fired; None: unknown
    path: Path
    firing_rates: object = None  # np.ndarray (dict_size,): firing frequencies, where only those are known (imported)

    def firing_frequency(self):
        """(dict_size,) held-out firing frequency of each feature (0: dead), or None when it was never measured."""
        if self.firing_counts is not None:
            return self.firing_counts / self.config.n_val_tokens
        return self.firing_rates

    @property
    def d_in(self) -> int:
        return self.decoder.shape[0]

    @property
    def dict_size(self) -> int:
        return self.decoder.shape[1]

    def snapshots(self) -> list[Snapshot]:
        """The budget axis, oldest first: the states saved at each doubling of the activations seen, then the final
        state (the dictionary's own decoder); none when training took none. Step 0 is ``tensors["decoder_init"]``."""
        taken = self.config.training.get("snapshots") or []
        if not taken:
            return []
        from safetensors.torch import load_file  # noqa: PLC0415

        path = self.path / SNAPSHOTS_FILE
        try:
            tensors = load_file(str(path))
        except OSError as exc:
            raise DataError(
                f"{self.path}: config.json lists {len(taken)} snapshots but {path.name} is unreadable "
                f"({exc}); train it again (`python train.py ... force=true`)"
            ) from None
        return [
            Snapshot(
                steps=m["steps"],
                activations_seen=m["activations_seen"],
                decoder=tensors[f"decoder.{m['steps']}"],
                fired=tensors[f"fired.{m['steps']}"].numpy(),
                metrics={k: v for k, v in m.items() if k not in ("steps", "activations_seen")},
            )
            for m in taken
            if not m.get("missing")  # a point its run lost (train/snapshots.py gather): said when it was saved
        ]


def load_dictionary(path: str | Path, verify_files: bool = True) -> Dictionary:
    """Load a dictionary folder (a store version, or any folder ``write_dictionary`` filled)."""
    import numpy as np  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    path = Path(path)
    manifest = verify(path) if verify_files and (path / MANIFEST).exists() else {"name": path.name}
    try:
        data = json.loads((path / SAE_CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a dictionary folder: {SAE_CONFIG_FILE} is unreadable ({exc})") from None
    config = DictionaryConfig.from_dict(data, path)
    tensors = load_file(str(path / SAE_WEIGHTS_FILE))
    counts = np.load(path / COUNTS_FILE)
    return Dictionary(manifest["name"], tensors["decoder"], tensors, config, counts, path)
