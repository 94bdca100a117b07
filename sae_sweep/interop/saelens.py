"""SAELens' folder format, both ways: a dictionary written as a folder ``sae_lens.SAE.load_from_disk`` opens, and
such a folder (ours or anyone's) read back as atoms.

The layout, as sae-lens 6.x loads it (a ReLU SAE with a unit-norm decoder is its ``standard`` architecture)::

    cfg.json                  architecture, d_in, d_sae, dtype, device, apply_b_dec_to_input,
                              normalize_activations, reshape_activations, metadata {model_name, hook_name, ...}
    sae_weights.safetensors   W_enc (d_in, d_sae), b_enc (d_sae,), W_dec (d_sae, d_in): row i is atom i, b_dec (d_in,)
    sparsity.safetensors      sparsity (d_sae,): log10 of each feature's held-out firing rate, floored at 1e-10

SAELens encodes ``relu((x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc)`` and decodes ``codes @ W_dec + b_dec``.
Ours is the same map with ``W_enc = encoder.weight^T`` (``D`` when tied), ``W_dec = D^T`` and ``b_dec`` the learned
decoder bias (zero, and not applied to the input, when the SAE has none), so a dictionary exported here encodes
activations to the codes our own module gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from sae_sweep.errors import DataError

SAELENS_DIR = "saelens"  # the subfolder of a dictionary folder that holds its SAELens export
CFG_FILE, WEIGHTS_FILE, SPARSITY_FILE = "cfg.json", "sae_weights.safetensors", "sparsity.safetensors"
HOOK = "blocks.{layer}.mlp.hook_post"  # TransformerLens' name for the MLP's hidden activations: what we harvest
SPARSITY_FLOOR = 1e-10  # log10 of a never-firing feature's rate is -10, not -inf
# The SAELens version whose cfg.json layout the export writes (checked against it). SAELens 6 reads a cfg.json whose
# metadata names no version of 6 or later as a pre-6 one: it rebuilds the metadata from top-level keys, losing
# hook_name, model_name and context_size and turning prepend_bos to True.
SAELENS_VERSION = "6.54.12"
# SAELens' names for the architectures whose decoder rows are atoms and whose weights have these four tensors.
ATOM_ROWS = ("standard", "topk", "batchtopk", "jumprelu", "gated")


class Architecture(Protocol):
    """What the export asks of an SAE architecture (sae_sweep/train/archs.py's objects)."""

    def saelens_config(self) -> dict: ...  # {"architecture": SAELens' name, and the fields it needs ("k")}

    def saelens_tensors(self, tensors: dict[str, torch.Tensor], dict_size: int) -> dict[str, torch.Tensor]: ...


class Standard:
    """SAELens' ``standard`` architecture: a ReLU SAE, which reads nothing beyond the four tensors (what the export of
    a dictionary written before its SAELens copy existed, and so before sae.arch, uses)."""

    def saelens_config(self) -> dict:
        return {"architecture": "standard"}

    def saelens_tensors(self, tensors: dict[str, torch.Tensor], dict_size: int) -> dict[str, torch.Tensor]:
        return {}


def weights(tensors: dict[str, torch.Tensor], arch: Architecture) -> dict[str, torch.Tensor]:
    """SAELens' tensors from a dictionary's ``sae.safetensors`` tensors (``decoder`` is (d_in, J)): the four every
    architecture has, then what ``arch``'s SAELens architecture reads (a threshold)."""
    decoder = tensors["decoder"]
    encoder = tensors.get("encoder.weight", decoder.t())  # tied: the encoder is D^T
    b_dec = tensors.get("decoder_bias", torch.zeros(decoder.shape[0], dtype=decoder.dtype))
    out = {
        "W_enc": encoder.t().contiguous(),  # (d_in, J)
        "b_enc": tensors["encoder.bias"].contiguous(),  # (J,)
        "W_dec": decoder.t().contiguous(),  # (J, d_in): row j is atom j
        "b_dec": b_dec.contiguous(),  # (d_in,)
    }
    return out | arch.saelens_tensors(tensors, decoder.shape[1])


def config(dictionary_config, arch: Architecture, gpt_metadata: dict | None = None) -> dict:
    """cfg.json for one of our dictionaries; ``gpt_metadata`` (the GPT artifact's metadata) gives the context size
    and the corpus when known."""
    c = dictionary_config
    return cfg_json(arch, c.d_in, c.dict_size, c.layer, model_name(c), bool(c.sae.get("decoder_bias", False)), c.name,
                    gpt_metadata)  # fmt: skip


def model_name(dictionary_config) -> str:
    """What SAELens' metadata calls the model: the GPT artifact, or the synthetic data's true-features artifact."""
    c = dictionary_config
    return c.gpt["artifact"] if c.gpt else f"synthetic ({(c.synthetic or {}).get('features', 'true features')})"


def cfg_json(
    arch: Architecture, d_in: int, d_sae: int, layer: int, model: str, apply_b_dec: bool, name: str, gpt: dict | None
) -> dict:
    """cfg.json's fields for an SAE of ``arch`` reading the MLP of ``layer``; ``name``: ours, kept in the metadata."""
    gpt = gpt or {}
    return {
        **arch.saelens_config(),
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": apply_b_dec,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": model,
            "hook_name": HOOK.format(layer=layer),
            "hook_head_index": None,
            "context_size": gpt.get("model", {}).get("block_size"),
            "dataset_path": gpt.get("data_key"),
            "prepend_bos": False,
            "sae_lens_version": SAELENS_VERSION,  # the layout is SAELens 6's: read as written, metadata included
            "sae_lens_training_version": None,  # not trained by SAELens
            "sae_sweep_name": name,  # the dictionary (or core) this was exported from
        },
    }


def sparsity(firing_counts: np.ndarray, n_rows: int) -> torch.Tensor:
    """(J,) log10 of the held-out firing rate, floored at SPARSITY_FLOOR."""
    rate = np.asarray(firing_counts, dtype=np.float64) / max(n_rows, 1)
    return torch.from_numpy(np.log10(np.maximum(rate, SPARSITY_FLOOR))).float()


def write(
    folder: Path, tensors: dict, dictionary_config, firing_counts, arch: Architecture, gpt_metadata: dict | None = None
) -> None:
    """Write the SAELens folder ``folder`` (created) for one dictionary of the architecture ``arch``."""
    log_rates = sparsity(firing_counts, dictionary_config.n_val_tokens)
    write_folder(folder, weights(tensors, arch), log_rates, config(dictionary_config, arch, gpt_metadata))


def write_folder(folder: Path, tensors: dict[str, torch.Tensor], log_rates: torch.Tensor, cfg: dict) -> None:
    """The three files of a SAELens folder (``folder`` created): SAELens' tensors, log10 firing rates, cfg.json."""
    from safetensors.torch import save_file  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / WEIGHTS_FILE))
    save_file({"sparsity": log_rates}, str(folder / SPARSITY_FILE))
    (folder / CFG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")


def read(folder: Path) -> tuple[torch.Tensor, dict, np.ndarray | None]:
    """A SAELens folder's atoms (d_in, d_sae) as columns, its cfg.json, and its firing rates (None if absent); the
    encoder, as our (d_sae, d_in) ``encoder.weight``, goes into the returned cfg as ``"_encoder"`` when present.

    DataError names the file and the field for a missing file, a missing field, an architecture whose decoder rows
    are not atoms, or a W_dec whose shape is not (d_sae, d_in) (a transposed export).
    """
    cfg_path, weights_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{cfg_path}: not a readable SAELens cfg.json ({exc})") from None
    if not isinstance(cfg, dict):
        raise DataError(
            f"{cfg_path}: expected a JSON object {{...}} as SAELens writes it, found a {type(cfg).__name__}"
        )
    missing = [k for k in ("d_in", "d_sae") if not isinstance(cfg.get(k), int)]
    if missing:
        raise DataError(f"{cfg_path}: no integer field {', '.join(missing)}; SAELens' cfg.json gives d_in and d_sae")
    arch = cfg.get("architecture", "standard")
    if arch not in ATOM_ROWS:
        raise DataError(f"{cfg_path}: architecture {arch!r} is not one whose decoder rows are atoms ({ATOM_ROWS})")
    tensors = load_tensors(weights_path)
    if "W_dec" not in tensors:
        raise DataError(f"{weights_path}: no tensor 'W_dec' (found {sorted(tensors)})")
    w_dec, shape = tensors["W_dec"], (cfg["d_sae"], cfg["d_in"])
    if tuple(w_dec.shape) != shape:
        hint = " (transposed: SAELens' W_dec rows are the atoms)" if tuple(w_dec.shape) == shape[::-1] else ""
        raise DataError(
            f"{weights_path}: W_dec has shape {tuple(w_dec.shape)}, cfg.json says (d_sae, d_in) = {shape}{hint}"
        )
    rates = None
    if (folder / SPARSITY_FILE).exists():
        log_rates = load_tensors(folder / SPARSITY_FILE).get("sparsity")
        if log_rates is not None and tuple(log_rates.shape) != (cfg["d_sae"],):
            raise DataError(
                f"{folder / SPARSITY_FILE}: 'sparsity' has shape {tuple(log_rates.shape)}, one value per latent "
                f"would be ({cfg['d_sae']},); delete it to analyse without firing rates"
            )
        rates = None if log_rates is None else np.power(10.0, log_rates.double().numpy())
        if rates is not None and not ((rates >= 0) & (rates <= 1)).all():  # NaN, or a log10 rate above 0
            raise DataError(f"{folder / SPARSITY_FILE}: 'sparsity' holds values that are no log10 firing rate (NaN, "
                            "or above 0); delete it to analyse without firing rates")  # fmt: skip
    if "W_enc" in tensors and tuple(tensors["W_enc"].shape) == shape[::-1]:
        cfg = {**cfg, "_encoder": tensors["W_enc"].t().float().contiguous()}
    return w_dec.t().float().contiguous(), cfg, rates


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; DataError naming the file when it is missing, truncated or not safetensors."""
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    try:
        return load_file(str(path))
    except (OSError, SafetensorError, ValueError) as exc:
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from None


def is_saelens_folder(folder: Path) -> bool:
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()
