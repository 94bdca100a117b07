"""The autoencoder: exact values on hand-set weights, the fused gradients against autograd, the unit-norm decoder."""

import os

import pytest
import torch

from sae_sweep import ConfigError
from sae_sweep.train.sae import SAEConfig, SparseAutoencoder


def hand_set(decoder_bias: bool = False) -> SparseAutoencoder:
    """d_in = 2, dict_size = 3: features e1, e2 and (e1 + e2)/sqrt(2)."""
    sae = SparseAutoencoder(2, SAEConfig(dict_size=3, decoder_bias=decoder_bias))
    s = 2**-0.5
    with torch.no_grad():
        sae.decoder.copy_(torch.tensor([[1.0, 0.0, s], [0.0, 1.0, s]]))
        sae.encoder.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        sae.encoder_bias.copy_(torch.tensor([0.0, -1.0, -2.0]))
        if decoder_bias:
            sae.decoder_bias.copy_(torch.tensor([1.0, 0.0]))
    return sae


def test_encode_decode_exact():
    sae = hand_set()
    x = torch.tensor([[2.0, 3.0], [-1.0, 0.5]])
    codes = sae.encode(x)
    # pre-activations: [2, 2, 3] and [-1, -0.5, -2.5] -> ReLU
    torch.testing.assert_close(codes, torch.tensor([[2.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    s = 2**-0.5
    torch.testing.assert_close(sae.decode(codes), torch.tensor([[2 + 3 * s, 2 + 3 * s], [0.0, 0.0]]))


def test_decoder_bias_centres_the_input_and_is_added_back():
    sae = hand_set(decoder_bias=True)
    x = torch.tensor([[3.0, 3.0]])  # centred: [2, 3], as above
    torch.testing.assert_close(sae.encode(x), torch.tensor([[2.0, 2.0, 3.0]]))
    s = 2**-0.5
    torch.testing.assert_close(sae(x)[0], torch.tensor([[3 + 3 * s, 2 + 3 * s]]))


def test_loss_formula_exact():
    sae = hand_set()
    x = torch.tensor([[2.0, 3.0], [-1.0, 0.5]])
    out = sae.loss(x, l1_coeff=0.5)
    s = 2**-0.5
    r = 2 + 3 * s
    mse = ((r - 2) ** 2 + (r - 3) ** 2 + 1.0 + 0.25) / 4  # mean over all 4 elements
    l1 = (2 + 2 + 3 + 0) / 2  # mean over the batch of each row's L1 norm
    assert out["mse"].item() == pytest.approx(mse, rel=1e-6)
    assert out["l1"].item() == pytest.approx(l1, rel=1e-6)
    assert out["loss"].item() == pytest.approx(mse + 0.5 * l1, rel=1e-6)


@pytest.mark.parametrize("decoder_bias", [False, True])
def test_fused_gradients_equal_autograd(decoder_bias):
    cfg = SAEConfig(dict_size=48, decoder_bias=decoder_bias, seed=3)
    ref, fused = SparseAutoencoder(12, cfg).double(), SparseAutoencoder(12, cfg).double()
    torch.manual_seed(0)
    with torch.no_grad():
        for p, q in zip(ref.parameters(), fused.parameters(), strict=True):
            p.add_(0.1 * torch.randn_like(p))
            q.copy_(p)
    x = torch.randn(40, 12, dtype=torch.float64)
    out = ref.loss(x, 0.05)
    out["loss"].backward()
    got = fused.fused_grads(x, 0.05)
    assert got["mse"].item() == pytest.approx(out["mse"].item(), rel=1e-12)
    for (name, p), q in zip(ref.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-12, msg=name)
    # A second call reuses the buffers and still gives the right answer.
    fused.fused_grads(x, 0.05)
    torch.testing.assert_close(fused.encoder.grad, ref.encoder.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for two thread counts to differ")
def test_one_seed_gives_one_dictionary_whatever_the_threads():
    """The orthogonal start's QR splits its sums by thread count; the training steps do not (checked with
    benchmarks/repro_under_load.py), so this is what a 1-thread job of hydra/launcher=parallel and a plain 2-thread
    run of the same seed would otherwise start, and end, apart on."""
    before = torch.get_num_threads()
    try:
        made = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            made[n] = SparseAutoencoder(128, SAEConfig(dict_size=1024, seed=3)).state_dict()
            assert torch.get_num_threads() == n  # restored after the init
    finally:
        torch.set_num_threads(before)
    for key, value in made[1].items():
        assert torch.equal(made[2][key], value), key


def test_init_is_orthogonal_with_unit_columns_and_seeded():
    a = SparseAutoencoder(8, SAEConfig(dict_size=32, seed=1))
    b = SparseAutoencoder(8, SAEConfig(dict_size=32, seed=1))
    c = SparseAutoencoder(8, SAEConfig(dict_size=32, seed=2))
    assert torch.equal(a.decoder, b.decoder) and not torch.equal(a.decoder, c.decoder)
    torch.testing.assert_close(a.decoder.norm(dim=0), torch.ones(32))
    small = SparseAutoencoder(8, SAEConfig(dict_size=4, seed=0)).decoder  # columns orthonormal when J <= d
    torch.testing.assert_close(small.t() @ small, torch.eye(4), atol=1e-6, rtol=0)
    assert a.decoder.shape == (8, 32) and a.encoder.shape == (32, 8)
    assert torch.equal(a.decoder_init, a.decoder)


def test_decoder_norms_are_one_after_steps():
    sae = SparseAutoencoder(6, SAEConfig(dict_size=20))
    opt = torch.optim.Adam(sae.parameters(), lr=0.1)
    x = torch.randn(64, 6)
    for _ in range(5):
        sae.fused_grads(x, 1e-3)
        opt.step()
        assert not torch.allclose(sae.decoder.norm(dim=0), torch.ones(20))  # the step moved the norms...
        sae.normalize_decoder_()
        torch.testing.assert_close(sae.decoder.norm(dim=0), torch.ones(20))  # ...and they are restored


def test_tied_weights_share_the_decoder():
    sae = SparseAutoencoder(4, SAEConfig(dict_size=6, tied=True))
    assert sae.encoder is None and torch.equal(sae.W_enc, sae.decoder.t())
    out = sae.loss(torch.randn(5, 4), 1e-3)
    out["loss"].backward()
    assert sae.decoder.grad is not None
    with pytest.raises(ValueError, match="untied"):
        sae.fused_grads(torch.randn(5, 4), 1e-3)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"dict_size": 0}, "sae.dict_size must be a positive integer, got 0"),
        ({"dict_size": -8}, "sae.dict_size must be a positive integer, got -8"),
        ({"dict_size": 2.5}, "sae.dict_size must be a positive integer, got 2.5"),
        ({"l1_coeff": -1e-3}, "sae.l1_coeff must be >= 0, got -0.001"),
        ({"l1_coeff": float("nan")}, "sae.l1_coeff must be >= 0, got nan"),
        ({"lr": 0.0}, "sae.lr must be > 0"),
        ({"resample_every": -1}, r"sae.resample_every must be 0 \(off\) or a positive number of steps, got -1"),
    ],
)
def test_bad_sae_config_names_the_value(kw, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        SAEConfig(**kw)


def test_activation_width_mismatch_names_both():
    sae = SparseAutoencoder(128, SAEConfig(dict_size=8))
    with pytest.raises(ConfigError, match="activations have width 64, but this SAE takes d_in=128"):
        sae.encode(torch.zeros(3, 64))


# ----------------------------------------------------------------------------------------- dead-feature resampling


def resample_set() -> SparseAutoencoder:
    """d_in = 2, dict_size = 5: live e1, e2 (identity encoder) and a silent live feature whose encoder row has norm
    4 (mean live row norm 2, so resampled rows get norm 0.4); features 3 and 4 are the dead ones."""
    sae = SparseAutoencoder(2, SAEConfig(dict_size=5))
    with torch.no_grad():
        sae.decoder.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0, 1.0]]))
        sae.encoder.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -4.0], [1.0, 1.0], [1.0, -1.0]]))
        sae.encoder_bias.copy_(torch.tensor([0.0, 0.0, -100.0, -100.0, -100.0]))
    return sae


DEAD = torch.tensor([False, False, False, True, True])


def test_resample_sets_dead_features_from_the_erroneous_input_and_leaves_live_ones():
    sae = resample_set()
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    # Reconstructions: [1, 2] exactly, [3, -4] as [3, 0] (squared error 16), [0, 0] exactly: only row 1 can be drawn.
    x = torch.tensor([[1.0, 2.0], [3.0, -4.0], [0.0, 0.0]])
    assert sae.resample_(DEAD, x, torch.Generator().manual_seed(0)) == 2
    u = torch.tensor([0.6, -0.8])
    for j in (3, 4):
        torch.testing.assert_close(sae.decoder[:, j], u, rtol=0, atol=1e-7)
        torch.testing.assert_close(sae.encoder[j], 0.4 * u, rtol=0, atol=1e-7)  # 0.2 x mean(1, 1, 4)
        assert sae.encoder[j].norm().item() == pytest.approx(0.4, abs=1e-7)
    assert sae.encoder_bias[3:].tolist() == [0.0, 0.0]
    torch.testing.assert_close(sae.decoder.norm(dim=0), torch.ones(5), rtol=0, atol=1e-7)
    assert torch.equal(sae.decoder[:, :3], before["decoder"][:, :3])  # live features bit for bit
    assert torch.equal(sae.encoder[:3], before["encoder"][:3])
    assert torch.equal(sae.encoder_bias[:3], before["encoder_bias"][:3])
    assert (sae.encode(x[1:2])[0, 3:] > 0).all()  # the new features fire on the input they were made from


def test_resample_without_dead_features_changes_nothing():
    sae = resample_set()
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    x = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    assert sae.resample_(torch.zeros(5, dtype=torch.bool), x, torch.Generator().manual_seed(0)) == 0
    assert all(torch.equal(v, before[k]) for k, v in sae.state_dict().items())


def silent_sae(dict_size: int, decoder_bias: bool = False) -> SparseAutoencoder:
    """Nothing fires (encoder bias -100), so the reconstruction is b_dec (or 0) and the error is ||x - b_dec||^2."""
    sae = SparseAutoencoder(2, SAEConfig(dict_size=dict_size, decoder_bias=decoder_bias))
    with torch.no_grad():
        sae.encoder_bias.fill_(-100.0)
        if decoder_bias:
            sae.decoder_bias.copy_(torch.tensor([1.0, 0.0]))
    return sae


def test_resample_draws_inputs_in_proportion_to_squared_error_and_by_its_generator_alone():
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # squared errors 1 and 9
    dead = torch.ones(2000, dtype=torch.bool)
    dead[0] = False
    runs = {}
    for seed in (0, 0, 1):
        sae = silent_sae(2000)
        torch.manual_seed(seed + 100)  # the global RNG must not matter
        assert sae.resample_(dead, x, torch.Generator().manual_seed(seed)) == 1999
        runs.setdefault(seed, []).append(sae.decoder[:, 1:].clone())
    picked_second = (runs[0][0][1] == 1.0).float().mean().item()
    assert picked_second == pytest.approx(0.9, abs=0.03)  # 9 / (1 + 9); uniform: 0.5, error norms: 0.75
    assert torch.equal(runs[0][0], runs[0][1]) and not torch.equal(runs[0][0], runs[1][0])


def test_resample_directions_are_centred_by_the_decoder_bias():
    sae = silent_sae(3, decoder_bias=True)  # b_dec = [1, 0]
    x = torch.tensor([[1.0, 0.0], [4.0, 4.0]])  # centred: [0, 0] (error 0) and [3, 4] (error 25)
    dead = torch.tensor([False, True, True])
    assert sae.resample_(dead, x, torch.Generator().manual_seed(0)) == 2
    torch.testing.assert_close(sae.decoder[:, 1:], torch.tensor([[0.6, 0.6], [0.8, 0.8]]), rtol=0, atol=1e-7)


def test_resampling_refuses_tied_weights():
    with pytest.raises(ConfigError, match=r"sae\.resample_every > 0 needs untied weights.*sae\.tied=false"):
        SAEConfig(tied=True, resample_every=100)
