import pytest
import torch

from sae_sweep import ConfigError
from sae_sweep.train.gpt import GPT, GPTConfig

TINY = GPTConfig(block_size=16, vocab_size=50, n_layer=3, n_head=2, n_embd=8)


def test_note_shape_and_named_mlp_activation():
    cfg = GPTConfig(vocab_size=100)
    model = GPT(cfg)
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.d_mlp) == (6, 32, 4, 8, 128)
    assert model.transformer.h[2].mlp.c_fc.weight.shape == (128, 32)
    assert model.get_submodule("transformer.h.2.mlp.act") is model.mlp_act(2)
    assert isinstance(model.mlp_act(2), torch.nn.GELU)
    assert all(lin.bias is None for lin in model.modules() if isinstance(lin, torch.nn.Linear))


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, 50, (3, 16))
    logits, loss = model(idx)
    assert logits.shape == (3, 16, 50) and loss is None
    _, loss = model(idx, idx)
    assert loss.shape == () and torch.isfinite(loss)
    # At init the logits are near zero, so the loss is near ln(vocab).
    assert abs(loss.item() - torch.log(torch.tensor(50.0)).item()) < 0.2


def test_hook_sees_post_gelu_activations():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    seen = []
    handle = model.mlp_act(1).register_forward_hook(lambda m, i, o: seen.append(o))
    idx = torch.randint(0, 50, (2, 5))
    model(idx)
    handle.remove()
    (acts,) = seen
    assert acts.shape == (2, 5, TINY.d_mlp)
    # The same activations computed by hand from the block's parts.
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(5))
    x = model.transformer.h[0](x)
    block = model.transformer.h[1]
    x = x + block.attn(block.ln_1(x))
    manual = torch.nn.functional.gelu(block.mlp.c_fc(block.ln_2(x)))
    torch.testing.assert_close(acts, manual)


def test_causal_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 50
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_weights_are_tied():
    model = GPT(TINY)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_gelu_variant_is_recorded_and_used():
    exact, tanh = GPT(TINY), GPT(GPTConfig(**{**TINY.to_dict(), "gelu": "tanh"}))
    assert exact.mlp_act(0).approximate == "none" and tanh.mlp_act(0).approximate == "tanh"
    assert tanh.config.to_dict()["gelu"] == "tanh"


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"n_embd": 30, "n_head": 4}, "divisible"),
        ({"n_layer": 0}, "model.n_layer"),
        ({"gelu": "relu"}, "model.gelu"),
        ({"dropout": 1.5}, "model.dropout"),
        ({"block_size": 2.5}, "model.block_size"),
    ],
)
def test_bad_model_config_names_the_key(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        GPTConfig(**bad)


def test_layer_outside_model_is_refused():
    with pytest.raises(ConfigError, match=r"layer=3 is outside the model: it has layers 0..2"):
        GPT(TINY).mlp_act(3)


def test_sequence_longer_than_block_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        GPT(TINY)(torch.zeros(1, 17, dtype=torch.long))
