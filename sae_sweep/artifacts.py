"""Artifacts: one product (a GPT, a dictionary) = one folder with fixed file names, versioned in a local store.

Layout of the store::

    <store>/<name>/v0/ ... v1/ ...      each version: the product's files + artifact.json
    <store>/<name>/latest               a one-line file naming the newest version ("v1")

``artifact.json`` holds the name, type, version, metadata and the sha256 of every file, so a truncated or edited
file is caught on load. A version is written under a temporary name and renamed into place, and ``latest`` moves
only after that, so a reader never sees a partial version. Names never contain ``/`` and match W&B artifact names,
so the same product can be logged to W&B and pulled back from either place.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from sae_sweep import ConfigError, DataError
from sae_sweep.data import TOKENIZER_FILE, sha256_file

log = logging.getLogger(__name__)

MANIFEST = "artifact.json"
LATEST = "latest"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Artifact:
    name: str
    version: int
    type: str
    path: Path
    metadata: dict

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise DataError(
            f"artifact name {name!r} is invalid: use letters, digits, '.', '_' and '-' (no '/'), "
            "as W&B artifact names do"
        )
    return name


def verify(path: Path) -> dict:
    """Read ``path/artifact.json`` and check every file's sha256 against it; return the manifest."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a readable artifact ({MANIFEST}: {exc})") from None
    for fname, digest in manifest["files"].items():
        fpath = path / fname
        if not fpath.is_file():
            raise DataError(f"artifact {manifest['name']}: file {fpath} is missing")
        if sha256_file(fpath) != digest:
            raise DataError(
                f"artifact {manifest['name']}: {fpath} does not match the sha256 recorded in {path / MANIFEST} "
                "(truncated or edited). Delete that version folder, or train it again."
            )
    return manifest


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name[1:]) for p in folder.iterdir() if re.fullmatch(r"v\d+", p.name))

    def save(self, name: str, type: str, write: Callable[[Path], None], metadata: dict | None = None) -> Artifact:
        """Create a new version of ``name``: ``write(folder)`` fills a fresh folder, then it is sealed.

        Sealing records the sha256 of each file in artifact.json, renames the folder to ``v<N>`` and moves
        ``latest``. If ``write`` fails (a full disk, say), the previous versions are untouched.
        """
        check_name(name)
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            try:
                write(tmp)
            except Exception as exc:  # safetensors reports ENOSPC as its own error type, not OSError
                if getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc):
                    raise DataError(
                        f"the disk is full: writing a new version of {name} to {self.root} failed ({exc}). "
                        "The previous versions are intact; free some space and rerun."
                    ) from exc
                raise
            files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            with FileLock(str(folder / ".lock")):
                version = (self._versions(name) or [-1])[-1] + 1
                manifest = {
                    "name": name,
                    "type": type,
                    "version": version,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "metadata": metadata or {},
                    "files": files,
                }
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
                final = folder / f"v{version}"
                os.replace(tmp, final)
                latest_tmp = folder / f".{LATEST}.tmp-{uuid.uuid4().hex[:8]}"
                latest_tmp.write_text(f"v{version}\n")
                os.replace(latest_tmp, folder / LATEST)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("saved artifact %s:v%d to %s", name, version, final)
        return Artifact(name, version, type, final, manifest["metadata"])

    def get(self, spec: str, verify_files: bool = True) -> Artifact:
        """Resolve ``name``, ``name:latest``, ``name:v3`` or a folder path to a verified artifact."""
        path = Path(spec).expanduser()
        if (path / MANIFEST).is_file():
            folder = path
        else:
            name, _, alias = spec.partition(":")
            check_name(name)
            versions = self._versions(name)
            if not versions:
                known = ", ".join(sorted(self.names())) or "none"
                raise DataError(f"no artifact {name!r} in the store {self.root} (it holds: {known})")
            alias = alias or LATEST
            if alias == LATEST:
                latest_file = self.root / name / LATEST
                alias = latest_file.read_text().strip() if latest_file.exists() else f"v{versions[-1]}"
            folder = self.root / name / alias
            if not re.fullmatch(r"v\d+", alias) or not folder.is_dir():
                have = ", ".join(f"v{v}" for v in versions)
                raise DataError(f"artifact {name!r} has no version {alias!r} (it has {have}, and latest)")
        manifest = verify(folder) if verify_files else json.loads((folder / MANIFEST).read_text())
        return Artifact(manifest["name"], manifest["version"], manifest["type"], folder, manifest["metadata"])

    def names(self, type: str | None = None) -> list[str]:
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.iterdir()):
            versions = self._versions(folder.name)
            if not versions:
                continue
            if type is not None:
                manifest = json.loads((folder / f"v{versions[-1]}" / MANIFEST).read_text())
                if manifest["type"] != type:
                    continue
            out.append(folder.name)
        return out

    def latest_of_type(self, type: str) -> Artifact | None:
        """The most recently created artifact of ``type`` across all names, or None."""
        best = None
        for name in self.names(type):
            art = self.get(name, verify_files=False)
            mtime = art.path.stat().st_mtime_ns
            if best is None or mtime > best[0]:
                best = (mtime, art)
        return None if best is None else self.get(str(best[1].path))


LOGGER_KINDS = ("wandb", "none")
WANDB_MODES = ("online", "offline")


@dataclass(frozen=True)
class LoggerConfig:
    kind: str = "wandb"  # wandb | none (a CSV of every metric is always written beside the run)
    mode: str = "offline"  # offline works with no account; `wandb sync` uploads later
    project: str = "sae-sweep"
    entity: str | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in LOGGER_KINDS:
            raise ConfigError(f"logger.kind must be one of {LOGGER_KINDS}, got {self.kind!r}")
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"logger.mode must be one of {WANDB_MODES}, got {self.mode!r}")


def wandb_host() -> tuple[str, int]:
    from urllib.parse import urlparse  # noqa: PLC0415

    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    return url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)


def wandb_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the W&B server opens within ``timeout``: a failed start must not fail the job."""
    import socket  # noqa: PLC0415

    try:
        socket.create_connection(wandb_host(), timeout=timeout).close()
        return True
    except OSError:
        return False


def log_to_wandb(run, artifact: Artifact, aliases: tuple[str, ...] = ("latest",)):
    """Upload a store artifact to a W&B run under the same name and type, with its metadata."""
    import wandb  # noqa: PLC0415

    art = wandb.Artifact(artifact.name, type=artifact.type, metadata=artifact.metadata)
    art.add_dir(str(artifact.path))
    return run.log_artifact(art, aliases=list(aliases))


@dataclass(frozen=True)
class Paths:
    """Where products live: ``cache/`` (tokens, activations), ``store/`` (artifacts), ``runs/`` (checkpoints, logs)."""

    root: Path

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def runs(self) -> Path:
        return self.root / "runs"


# ------------------------------------------------------------------------------ the GPT model folder

MODEL_TYPE = "model"
WEIGHTS_FILE, MODEL_CONFIG_FILE, DATA_FILE = "model.safetensors", "config.json", "data.json"


def write_gpt(folder: Path, model, tokenizer_file: Path, data_meta: dict, train_info: dict) -> None:
    """Fill ``folder`` with a self-describing GPT: weights, config, tokenizer and the corpus it was trained on."""
    from safetensors.torch import save_model  # noqa: PLC0415 - keeps `import sae_sweep.artifacts` light

    save_model(model, str(folder / WEIGHTS_FILE))  # drops the tied lm_head copy; load_model restores it
    config = {"model": model.config.to_dict(), "train": train_info}
    (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(tokenizer_file, folder / TOKENIZER_FILE)
    (folder / DATA_FILE).write_text(json.dumps(data_meta, indent=2) + "\n")


@dataclass
class LoadedGPT:
    model: object  # sae_sweep.model.GPT, in eval mode
    tokenizer: object
    config: dict  # config.json: {"model": GPTConfig fields, "train": how it was trained}
    data: dict  # the token cache's meta.json: corpus, key, token counts
    path: Path


def load_gpt(path: str | Path, verify_files: bool = True) -> LoadedGPT:
    """Load a GPT folder (a store version, or any folder ``write_gpt`` filled) onto the CPU."""
    from safetensors.torch import load_model  # noqa: PLC0415

    from sae_sweep.model import GPT, GPTConfig  # noqa: PLC0415
    from sae_sweep.tokenizer import load_tokenizer  # noqa: PLC0415

    path = Path(path)
    if verify_files and (path / MANIFEST).exists():
        verify(path)
    config = json.loads((path / MODEL_CONFIG_FILE).read_text())
    model = GPT(GPTConfig(**config["model"]))
    load_model(model, str(path / WEIGHTS_FILE))
    model.eval()
    data = json.loads((path / DATA_FILE).read_text())
    return LoadedGPT(model, load_tokenizer(path / TOKENIZER_FILE), config, data, path)


# ------------------------------------------------------------------------------ the SAE dictionary folder

DICTIONARY_TYPE = "sae-dictionary"
SAE_WEIGHTS_FILE, SAE_CONFIG_FILE, COUNTS_FILE = "sae.safetensors", "config.json", "firing_counts.npy"
DECODER_ORIENTATION = "decoder: (d_in, dict_size); column j is feature j, unit norm (the note's D)"


def dictionary_name(layer: int, dict_size: int, seed: int, variant: str = "") -> str:
    """``sae-L2-J1024-s0``; a control run adds its variant: ``sae-L2-J1024-s0-untrained``."""
    return f"sae-L{layer}-J{dict_size}-s{seed}" + (f"-{variant}" if variant else "")


def write_dictionary(folder: Path, sae, config: dict, firing_counts, extra_files: dict | None = None) -> None:
    """Fill ``folder`` with one dictionary: weights (with the decoder at initialisation), config, firing counts.

    ``extra_files`` maps a file name in the folder to a source path to copy (metrics.csv, a histogram).
    """
    import numpy as np  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    tensors = {
        "decoder": sae.decoder.detach().cpu().contiguous(),
        "decoder_init": sae.decoder_init.cpu().contiguous(),
        "encoder.bias": sae.encoder_bias.detach().cpu().contiguous(),
    }
    if not sae.tied:
        tensors["encoder.weight"] = sae.encoder.detach().cpu().contiguous()
    if sae.decoder_bias is not None:
        tensors["decoder_bias"] = sae.decoder_bias.detach().cpu().contiguous()
    save_file(tensors, str(folder / SAE_WEIGHTS_FILE), metadata={"orientation": DECODER_ORIENTATION})
    (folder / SAE_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    np.save(folder / COUNTS_FILE, np.asarray(firing_counts, dtype=np.int64))
    for name, src in (extra_files or {}).items():
        shutil.copyfile(src, folder / name)


@dataclass
class Dictionary:
    """A trained SAE as arrays: ``decoder`` is the note's D, (d_in, dict_size) with unit-norm columns."""

    name: str
    decoder: object  # torch.Tensor (d_in, dict_size)
    tensors: dict  # every stored tensor, decoder_init and the encoder included
    config: dict  # config.json: hyperparameters, digests, final metrics
    firing_counts: object  # np.ndarray (dict_size,): held-out activations on which each feature fired
    path: Path

    @property
    def d_in(self) -> int:
        return self.decoder.shape[0]

    @property
    def dict_size(self) -> int:
        return self.decoder.shape[1]

    def to_sae(self):
        """Rebuild the trained SparseAutoencoder module (CPU, eval mode)."""
        from sae_sweep.sae import SAEConfig, SparseAutoencoder  # noqa: PLC0415

        sae = SparseAutoencoder(self.d_in, SAEConfig(**self.config["sae"]))
        state = {"decoder": self.tensors["decoder"], "encoder_bias": self.tensors["encoder.bias"]}
        if "encoder.weight" in self.tensors:
            state["encoder"] = self.tensors["encoder.weight"]
        if "decoder_bias" in self.tensors:
            state["decoder_bias"] = self.tensors["decoder_bias"]
        sae.load_state_dict(state)
        sae.decoder_init.copy_(self.tensors["decoder_init"])
        return sae.eval()


def load_dictionary(path: str | Path, verify_files: bool = True) -> Dictionary:
    """Load a dictionary folder (a store version, or any folder ``write_dictionary`` filled)."""
    import numpy as np  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    path = Path(path)
    manifest = verify(path) if verify_files and (path / MANIFEST).exists() else {"name": path.name}
    tensors = load_file(str(path / SAE_WEIGHTS_FILE))
    config = json.loads((path / SAE_CONFIG_FILE).read_text())
    counts = np.load(path / COUNTS_FILE)
    return Dictionary(manifest["name"], tensors["decoder"], tensors, config, counts, path)
