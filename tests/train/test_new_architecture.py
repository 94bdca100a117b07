"""A new SAE architecture is one class: a Gated SAE (Rajamanoharan et al. 2024), written here only as far as needed,
trains, is named, saved, rebuilt and exported with no line changed anywhere else (archs.py's promise)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from sae_sweep.dictionary import load_dictionary
from sae_sweep.errors import ConfigError
from sae_sweep.interop import saelens
from sae_sweep.train import archs
from sae_sweep.train.sae import SAEConfig, SparseAutoencoder
from sae_sweep.train.sae_stage import write_with_export

from ..conftest import dictionary_config


class Gated(archs.Architecture):
    """Codes f = 1[pi_gate > 0] * ReLU(pi_mag), pi_gate = W (x - b_dec) + b_gate (our encoder and its bias),
    pi_mag = exp(r_mag) * W (x - b_dec) + b_mag; loss = mse + l1_coeff * ||ReLU(pi_gate)||_1 + the gate's own
    reconstruction through the frozen decoder."""

    name = "gated"
    saelens = "gated"
    params = ("l1_coeff",)
    tensors = ("r_mag", "b_mag")

    def add_to(self, sae: nn.Module) -> None:
        sae.r_mag = nn.Parameter(torch.zeros(self.cfg.dict_size))
        sae.b_mag = nn.Parameter(torch.zeros(self.cfg.dict_size))

    def encode(self, sae: nn.Module, pre: torch.Tensor) -> torch.Tensor:
        magnitude = (pre - sae.encoder_bias) * sae.r_mag.exp() + sae.b_mag
        return (pre > 0) * torch.relu(magnitude)

    def loss(self, sae: nn.Module, x: torch.Tensor, l1_coeff: float, dead: torch.Tensor | None) -> archs.Loss:
        pre = sae.pre_activations(x)
        codes = self.encode(sae, pre)
        recon = sae.decode(codes)
        gate = torch.relu(pre)
        mse = (recon - x).pow(2).mean()
        aux = (sae.add_bias(gate @ sae.decoder.detach().t()) - x).pow(2).mean()
        l1 = gate.sum(dim=1).mean()
        return {"loss": mse + l1_coeff * l1 + aux, "mse": mse, "l1": l1, "codes": codes.detach(), "recon": recon,
                "code_sums": codes.detach().sum(dim=0)}  # fmt: skip

    def penalty(self, l1_sum, l0_sum, n: int, l1_coeff: float):
        return l1_coeff * l1_sum / n

    def saelens_tensors(self, tensors: dict, dict_size: int) -> dict:
        return {"b_gate": tensors["encoder.bias"].clone(), "r_mag": tensors["r_mag"], "b_mag": tensors["b_mag"]}


@pytest.fixture
def gated():
    archs.register(Gated)
    yield Gated
    del archs.ARCHITECTURES["gated"]


def test_an_unregistered_architecture_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"sae.arch must be one of \('relu', 'topk', 'batchtopk', 'jumprelu'\)"):
        SAEConfig(arch="gated")


def test_a_registered_architecture_trains_saves_rebuilds_and_exports(gated, tmp_path):
    cfg = SAEConfig(dict_size=16, arch="gated", l1_coeff=1e-2)
    assert (cfg.arch_suffix, cfg.sparsity_label) == ("gated", "gated")  # its name part: sae-L2-J16-s0-gated
    sae = SparseAutoencoder(8, cfg)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    x = torch.relu(torch.randn(256, 8, generator=torch.Generator().manual_seed(0)))
    first = None
    for _ in range(50):
        opt.zero_grad()
        out = sae.loss(x, cfg.l1_coeff)
        out["loss"].backward()
        opt.step()
        sae.normalize_decoder_()
        first = first if first is not None else float(out["loss"].detach())
    assert float(out["loss"].detach()) < first and float(sae.r_mag.abs().sum()) > 0  # it learned, its own tensors too
    config = dictionary_config("sae-L2-J16-s0-gated", variant="gated", d_in=8, dict_size=16, sae=cfg.to_dict())
    write_with_export(tmp_path, sae, config, np.ones(16, dtype=np.int64))
    rebuilt = SparseAutoencoder.from_dictionary(load_dictionary(tmp_path))
    assert torch.equal(rebuilt.encode(x), sae.encode(x).detach())
    exported = json.loads((tmp_path / saelens.SAELENS_DIR / saelens.CFG_FILE).read_text())
    assert exported["architecture"] == "gated"
    from safetensors.torch import load_file  # noqa: PLC0415

    weights = load_file(str(tmp_path / saelens.SAELENS_DIR / saelens.WEIGHTS_FILE))
    assert torch.equal(weights["r_mag"], sae.r_mag.detach()) and {"b_gate", "b_mag", "W_dec"} <= set(weights)
