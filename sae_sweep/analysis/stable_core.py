"""A stable-core dictionary folder: the features every seed found at one size, as a product of its own.

Not a trained dictionary, so not a ``sae-dictionary``: an artifact of type ``sae-core`` named
``sae-core-L<layer>-J<size>[-<variant>]``, which the collector (it reads ``sae-dictionary`` manifests named
``sae-L<layer>-J<size>-s<seed>``) and the export never take for a dictionary, so it is never re-analysed as one::

    core.safetensors    decoder (d_in, n), encoder.weight (n, d_in), encoder.bias (n,), decoder_bias (d_in,)
    core.json           CoreConfig: the size, seeds and dictionaries it was made from, the rule, each atom's
                        members and source, and its held-out FVU and L0 beside the full dictionary's
    saelens/            the same SAE as a SAELens ``standard`` folder (``SAE.load_from_disk`` opens it), with
                        latent_scores.csv: per latent its members, source and replication (SAELens ignores it)

Built by the analysis (measures/core.py, products.py) from the dictionaries it analysed; ``load_core`` reads one back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from sae_sweep.analysis.report.tables import write_csv
from sae_sweep.errors import DataError
from sae_sweep.interop import saelens
from sae_sweep.store import MANIFEST, ArtifactStore, verify

CORE_TYPE = "sae-core"
CORE_WEIGHTS, CORE_CONFIG = "core.safetensors", "core.json"
SCORES_FILE = "latent_scores.csv"  # per-latent scores beside a SAELens folder's files (SAELens ignores the file)
RULE = (
    "a first-seed feature found again (beyond the null at the FDR, cosine >= match_cosine) and mutually in every other "
    "seed's dictionary of the size; atom: the group's medoid (largest summed cosine to the others) with its encoder "
    "row, its encoder bias folded onto the core's decoder bias (the first seed's) so its codes are its source's"
)


def core_name(layer: int, size: int, variant: str = "") -> str:
    """``sae-core-L2-J1024``; a variant's core adds it: ``sae-core-L2-J1024-synthetic-l1-0.005``."""
    return f"sae-core-L{layer}-J{size}" + (f"-{variant}" if variant else "")


@dataclass(frozen=True)
class CoreConfig:
    """core.json of a stable-core folder. Field order is the file's key order."""

    name: str
    variant: str
    layer: int
    d_in: int
    dict_size: int  # the size of the dictionaries it was made from
    n_features: int
    seeds: list[int]
    sources: list[str]  # the dictionaries of those seeds, by name, in ``seeds`` order
    rule: str
    analysis: dict  # fdr, match_cosine, nulls: what "found again" meant
    members: list[list[int]]  # per atom: its feature index in each source dictionary
    medoid: list[int]  # per atom: the position in ``sources`` of the dictionary that gave it
    mean_cos: list[float]  # per atom: the mean cosine between its members' atoms
    metrics: dict  # held out: fvu, l0 of the core; full_fvu, full_l0 of sources[0]; rows
    source: dict  # the first source's ``gpt`` and ``synthetic`` records: what its activations are

    @classmethod
    def from_dict(cls, data: dict, where: Path) -> CoreConfig:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise DataError(f"{where}/{CORE_CONFIG} lacks {', '.join(missing)}: run analyze.py again to rebuild it")
        return cls(**{n: data[n] for n in names})


def _saelens_cfg(c: CoreConfig, gpt: dict | None) -> dict:
    model = c.source["gpt"]["artifact"] if c.source.get("gpt") else "synthetic"
    return saelens.cfg_json(saelens.Standard(), c.d_in, c.n_features, c.layer, model, True, c.name, gpt)


def score_rows(c: CoreConfig, firing: np.ndarray | None) -> list[dict]:
    """latent_scores.csv of a core: one row per latent."""
    return [{"latent": i, "source": c.sources[m], "source_feature": members[m], "mean_cos": round(mc, 6),
             "replications": len(members) - 1, "firing_frequency": None if firing is None else float(firing[i]),
             **{f"feature_in_{name}": f for name, f in zip(c.sources, members, strict=True)}}
            for i, (members, m, mc) in enumerate(zip(c.members, c.medoid, c.mean_cos, strict=True))]  # fmt: skip


def save_core(store: ArtifactStore, c: CoreConfig, tensors: dict, firing: np.ndarray | None, gpt: dict | None = None):
    """A new version of the core ``c`` in ``store``: its tensors, core.json and its SAELens folder."""
    from safetensors.torch import save_file  # noqa: PLC0415

    def write(folder: Path) -> None:
        save_file(tensors, str(folder / CORE_WEIGHTS))
        (folder / CORE_CONFIG).write_text(json.dumps(asdict(c), indent=2) + "\n")
        rates = np.zeros(c.n_features) if firing is None else np.asarray(firing)
        log_rates = saelens.sparsity(np.nan_to_num(rates), 1)
        sl = folder / saelens.SAELENS_DIR
        saelens.write_folder(sl, saelens.weights(tensors, saelens.Standard()), log_rates, _saelens_cfg(c, gpt))
        write_csv(sl / SCORES_FILE, score_rows(c, firing))

    meta = {"dict_size": c.dict_size, "layer": c.layer, "variant": c.variant, "n_features": c.n_features,
            "seeds": c.seeds, **{k: c.metrics.get(k) for k in ("fvu", "l0", "full_fvu", "full_l0")}}  # fmt: skip
    return store.save(c.name, CORE_TYPE, write, meta)


@dataclass
class StableCore:
    config: CoreConfig
    tensors: dict[str, torch.Tensor]
    path: Path


def load_core(path: str | Path) -> StableCore:
    """A stable-core folder (a store version) read back, every file's sha256 checked; a dictionary or any other
    product is refused by its type."""
    from safetensors.torch import load_file  # noqa: PLC0415

    path = Path(path)
    if not (path / MANIFEST).exists():
        raise DataError(f"{path} is not a stable-core folder: it has no {MANIFEST}")
    manifest = verify(path)
    if manifest.get("type") != CORE_TYPE:
        raise DataError(f"{path} holds a {manifest.get('type')!r}, not a {CORE_TYPE!r} (a stable core)")
    config = CoreConfig.from_dict(json.loads((path / CORE_CONFIG).read_text()), path)
    return StableCore(config, load_file(str(path / CORE_WEIGHTS)), path)
