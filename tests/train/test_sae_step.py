"""The hand-written SAE step: both paths against autograd in float64, the density switch, and training on each path."""

import pytest
import torch

from sae_sweep import ConfigError
from sae_sweep.train.sae import SAEConfig, SparseAutoencoder
from sae_sweep.train.sae_step import DENSITY_ROWS, choose_path

D_IN, J, B = 12, 40, 24


def autograd_grads(sae: SparseAutoencoder, x: torch.Tensor, l1: float) -> dict[str, torch.Tensor]:
    sae.zero_grad(set_to_none=True)
    out = sae.loss(x, l1)
    out["loss"].backward()
    grads = {name: p.grad.clone() for name, p in sae.named_parameters()}
    return {**grads, "mse": out["mse"].detach(), "code_sums": out["code_sums"]}


def assert_step_equals_autograd(sae: SparseAutoencoder, x: torch.Tensor, path: str, l1: float = 0.05) -> dict:
    ref = autograd_grads(sae, x, l1)
    sae.zero_grad(set_to_none=True)
    got = sae.fused_grads(x, l1, path)
    assert got["path"] == path
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, ref[name], rtol=1e-10, atol=1e-12, msg=f"{path}: {name}")
    torch.testing.assert_close(got["mse"], ref["mse"], rtol=1e-12, atol=0)
    torch.testing.assert_close(got["code_sums"], ref["code_sums"], rtol=1e-12, atol=1e-12)
    return got


def sae64(decoder_bias: bool = False, seed: int = 0) -> SparseAutoencoder:
    return SparseAutoencoder(D_IN, SAEConfig(dict_size=J, decoder_bias=decoder_bias, seed=seed)).double()


@pytest.mark.parametrize("decoder_bias", [False, True])
@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize("shift", [0.0, -0.3, -1.0])  # about half, a tenth and almost none of the codes positive
def test_both_paths_equal_autograd_on_random_codes(decoder_bias, path, shift):
    sae = sae64(decoder_bias, seed=3)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
        sae.encoder_bias.add_(shift)
    x = torch.randn(B, D_IN, dtype=torch.float64)
    got = assert_step_equals_autograd(sae, x, path)
    assert 0 < (got["codes"] > 0).sum() < B * J  # neither degenerate case: those are tested by hand below
    assert_step_equals_autograd(sae, x, path)  # a second call reuses the buffers and is still right


def hand_made(kind: str, decoder_bias: bool) -> SparseAutoencoder:
    """Pre-activations dominated by the bias: none, exactly feature 7, or every feature positive on every row."""
    sae = sae64(decoder_bias, seed=5)
    bias = {"none": -torch.ones(J), "one": -torch.ones(J), "all": torch.ones(J)}[kind].double()
    if kind == "one":
        bias[7] = 1.0
    with torch.no_grad():
        sae.encoder.mul_(0.01)  # |W x| < 0.2 for these inputs, so the bias decides the sign
        sae.encoder_bias.copy_(bias)
    return sae


@pytest.mark.parametrize("decoder_bias", [False, True])
@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize("kind, active", [("none", 0), ("one", B), ("all", B * J)])
def test_both_paths_equal_autograd_on_hand_made_codes(decoder_bias, path, kind, active):
    sae = hand_made(kind, decoder_bias)
    x = torch.randn(B, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    got = assert_step_equals_autograd(sae, x, path)
    codes = got["codes"]
    assert int((codes > 0).sum()) == active
    if kind == "one":
        assert torch.equal((codes > 0).nonzero()[:, 1], torch.full((B,), 7))
        nonzero_rows = sae.encoder.grad.abs().sum(dim=1).nonzero().squeeze(1)
        assert nonzero_rows.tolist() == [7]  # only the active feature's encoder row gets a gradient
    if kind == "none":
        assert torch.equal(sae.encoder.grad, torch.zeros_like(sae.encoder))


def codes_with_density(per_row: int, rows: int = DENSITY_ROWS, width: int = 100) -> torch.Tensor:
    """(rows, width) codes with exactly ``per_row`` positive entries in each row, at shifting columns."""
    codes = torch.zeros(rows, width)
    for r in range(rows):
        codes[r, (torch.arange(per_row) * 7 + r) % width] = 0.5
    return codes


@pytest.mark.parametrize(
    "per_row, expected", [(0, "sparse"), (4, "sparse"), (5, "sparse"), (6, "dense"), (60, "dense")]
)
def test_the_switch_picks_by_the_fraction_of_positive_codes(per_row, expected):
    codes = codes_with_density(per_row)
    assert (codes > 0).float().mean().item() == pytest.approx(per_row / 100)
    assert choose_path(codes, "auto", 0.05) == expected  # 5 of 100 is at the bound: sparse


def test_the_switch_reads_a_sample_of_rows_and_obeys_a_forced_path():
    dense_rows = codes_with_density(60, rows=DENSITY_ROWS + 100)
    dense_rows[DENSITY_ROWS:] = 0.0  # rows past the sample are not read
    assert choose_path(dense_rows, "auto", 0.05) == "dense"
    assert choose_path(codes_with_density(60), "sparse", 0.05) == "sparse"
    assert choose_path(codes_with_density(1), "dense", 0.05) == "dense"
    assert choose_path(codes_with_density(60), "auto", 1.0) == "sparse"
    assert choose_path(codes_with_density(1), "auto", 0.0) == "dense"


def test_auto_takes_the_sparse_path_once_training_has_made_the_codes_sparse():
    sae = SparseAutoencoder(D_IN, SAEConfig(dict_size=J))
    x = torch.randn(B, D_IN)
    assert sae.fused_grads(x, 1e-3)["path"] == "dense"  # nn.Linear's start: about half the codes positive
    with torch.no_grad():
        sae.encoder_bias.fill_(-10.0)
    assert sae.fused_grads(x, 1e-3)["path"] == "sparse"


def test_an_unknown_path_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"sae.step must be one of \('auto', 'dense', 'sparse'\), got 'fast'"):
        SAEConfig(step="fast")
    with pytest.raises(ConfigError, match="sae.sparse_max_density must be in"):
        SAEConfig(sparse_max_density=1.5)
    with pytest.raises(ConfigError, match="sae.step must be one of"):
        SparseAutoencoder(D_IN, SAEConfig(dict_size=J)).fused_grads(torch.randn(3, D_IN), 1e-3, "fast")


def train(path: str, steps: int = 120) -> SparseAutoencoder:
    """Adam on a fixed stream of sparse-ish inputs; the bias starts low so the sparse path has work from step 0."""
    sae = SparseAutoencoder(D_IN, SAEConfig(dict_size=J, seed=4))
    with torch.no_grad():
        sae.encoder_bias.sub_(0.3)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3, fused=True)
    gen = torch.Generator().manual_seed(9)
    for _ in range(steps):
        x = torch.relu(torch.randn(B, D_IN, generator=gen))
        assert sae.fused_grads(x, 1e-3, path)["path"] == path
        opt.step()
        sae.normalize_decoder_()
    return sae


def test_training_on_the_sparse_and_the_dense_path_reaches_the_same_dictionary():
    sparse, dense = train("sparse"), train("dense")
    start = SparseAutoencoder(D_IN, SAEConfig(dict_size=J, seed=4)).decoder
    assert (dense.decoder - start).abs().max() > 1e-2  # training moved it, so agreement below is not trivial
    for a, b in zip(sparse.parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5)


def test_the_decoder_is_stored_feature_major_and_renormalisation_refuses_a_dead_column():
    sae = SparseAutoencoder(D_IN, SAEConfig(dict_size=J))
    assert sae.decoder.shape == (D_IN, J) and sae.decoder.t().is_contiguous()
    with torch.no_grad():
        sae.decoder[:, 3] = 0.0
    with pytest.raises(FloatingPointError, match="cannot be renormalised"):
        sae.normalize_decoder_()
    with torch.no_grad():
        sae.decoder[:, 3] = float("nan")
    with pytest.raises(FloatingPointError, match="cannot be renormalised"):
        sae.normalize_decoder_()
