"""The replication's initialisation, and training to a measured convergence: the rule on hand-made curves, its
record, and a resumed run that stops where an uninterrupted one does."""

import math
from dataclasses import replace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from sae_sweep import ConfigError
from sae_sweep.train.batches import ActivationDataModule
from sae_sweep.train.convergence import Evaluation, StoppingRule, evaluate
from sae_sweep.train.runs import last_checkpoint
from sae_sweep.train.sae import SAEConfig, SparseAutoencoder
from sae_sweep.train.sae_module import SAEModule
from sae_sweep.train.trainer import TrainerConfig, build_trainer
from tests.conftest import TINY_SAE, KillAt, Killed


def test_linear_init_is_nn_linears_distribution_and_independent_of_the_decoder():
    d, J = 128, 4096
    sae = SparseAutoencoder(d, SAEConfig(dict_size=J, seed=3))
    bound = 1 / math.sqrt(d)  # nn.Linear(d, J): kaiming_uniform(a=sqrt(5)) weight and U(-1/sqrt(d), 1/sqrt(d)) bias
    for t in (sae.encoder.detach(), sae.encoder_bias.detach()):
        assert t.abs().max() <= bound and t.abs().max() > 0.99 * bound
        assert abs(t.mean()) < 0.02 * bound and abs(t.var() - bound**2 / 3) < 0.02 * bound**2
    reference = torch.nn.Linear(d, J)  # the same law, drawn by PyTorch itself
    assert abs(reference.weight.detach().var() - sae.encoder.detach().var()) < 0.02 * bound**2
    cos = torch.nn.functional.cosine_similarity(sae.encoder.detach(), sae.decoder.detach().t(), dim=1)  # (J,)
    assert abs(cos.mean()) < 0.01 and cos.abs().max() < 0.5  # random directions in 128-d: |cos| ~ 0.09
    assert sae.decoder.norm(dim=0).sub(1).abs().max() < 1e-5  # the decoder is still orthogonal with unit columns
    again = SparseAutoencoder(d, SAEConfig(dict_size=J, seed=3))
    assert torch.equal(again.encoder, sae.encoder) and torch.equal(again.encoder_bias, sae.encoder_bias)


def test_transpose_init_is_the_decoders_transpose_with_zero_bias():
    sae = SparseAutoencoder(16, SAEConfig(dict_size=32, seed=1, init="transpose"))
    assert torch.equal(sae.encoder.detach(), sae.decoder.detach().t()) and not sae.encoder_bias.any()
    linear = SparseAutoencoder(16, SAEConfig(dict_size=32, seed=1))
    assert torch.equal(linear.decoder, sae.decoder)  # the same decoder whatever the encoder's start


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("init", "xavier", "sae.init must be one of"),
        ("until", "forever", "sae.until must be one of"),
        ("eval_every", 0, "sae.eval_every must be a positive integer"),
        ("loss_tol", -1.0, "sae.loss_tol must be >= 0"),
    ],
)
def test_bad_convergence_settings_are_named(field, value, needle):
    with pytest.raises(ConfigError, match=needle):
        SAEConfig(**{field: value})


def ev(step: int, loss: float, drift: float | None = 0.001) -> Evaluation:
    return Evaluation(step, loss, loss, 0.1, 10.0, 0.0, drift)


def test_rule_stops_at_the_first_settled_evaluation_and_not_before():
    # Losses fall by 10%, 5%, 2%, then 0.1% per evaluation; window 2, tolerance 0.5%.
    losses = [1.0, 0.9, 0.855, 0.838, 0.837, 0.8362, 0.8355, 0.835]
    rule = StoppingRule(window=2, loss_tol=5e-3, drift_tol=0.01)
    stops = [rule.update(ev(100 * (i + 1), loss)) for i, loss in enumerate(losses)]
    # gain over the last 2 at the 5th evaluation: (0.855 - 0.837) / 0.837 = 2.2%; at the 6th: 0.22% -> settled
    assert stops == [False, False, False, False, False, True, True, True] and rule.converged_at == 600
    assert rule.improvement() == pytest.approx((0.8362 - 0.835) / 0.835)  # best before the window vs best now


def test_rule_waits_for_the_decoder_to_settle_too():
    rule = StoppingRule(window=1, loss_tol=1e-2, drift_tol=0.01)
    assert not rule.update(ev(1, 1.0, drift=None))  # the first evaluation has no drift yet
    assert not rule.update(ev(2, 1.0, drift=0.05))  # the loss is flat, but the features still turn
    assert rule.update(ev(3, 1.0, drift=0.005))
    assert rule.converged_at == 3


def test_evaluate_measures_drift_on_features_that_fire_only():
    sae = SparseAutoencoder(2, SAEConfig(dict_size=2, seed=0, init="transpose"))
    with torch.no_grad():
        sae.decoder.copy_(torch.eye(2))
        sae.encoder.copy_(torch.eye(2))
        sae.encoder_bias.copy_(torch.tensor([0.0, -10.0]))  # feature 1 never fires
    before = torch.tensor([[math.cos(0.1), 0.0], [math.sin(0.1), 1.0]])  # feature 0 turned by 0.1 rad since
    e = evaluate(sae, torch.tensor([[1.0, 0.0], [2.0, 0.0]]), 0.0, before, step=7)
    assert e.drift == pytest.approx(1 - math.cos(0.1), rel=1e-5)
    assert e.dead_fraction == 0.5 and e.l0 == 1.0 and e.mse == 0.0


CFG = replace(TINY_SAE, eval_every=4, window=2, loss_tol=0.05, drift_tol=1.0, epochs=4, steps_per_batch=2)


def _fit(tmp_path, acts, name, module, *callbacks, ckpt=None, loggers=()) -> pl.Trainer:
    module.held_out = torch.from_numpy(np.load(acts)[:64].astype(np.float32))
    trainer = build_trainer(
        TrainerConfig(progress_bar=False),
        run_dir=tmp_path / name,
        max_steps=4 * 64,
        loggers=list(loggers),
        ckpt_every=module.cfg.ckpt_every,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule=ActivationDataModule(acts, module.cfg), ckpt_path=ckpt)
    return trainer


class SavedAt(pl.Callback):
    """Records the step of every checkpoint written."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.steps.append(trainer.global_step)


def test_stacked_steps_train_bit_for_bit_as_one_step_per_batch(tmp_path):
    """sae.steps_per_batch only changes how many optimizer steps share one Lightning batch: with 5 (stacks that
    end at multiples of 5 and of ckpt_every=7) the run converges at the same step, inside a stack, to the same
    weights bit for bit, with the same checkpoint steps and the same metrics.csv."""
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).normal(size=(64 * 8, 4)).astype(np.float16))
    runs = {}
    for k in (1, 5):
        torch.manual_seed(0)
        module = SAEModule(4, replace(CFG, steps_per_batch=k, ckpt_every=7))
        csv = CSVLogger(tmp_path / f"k{k}", name="", version="")
        saved = SavedAt()
        trainer = _fit(tmp_path, acts, f"k{k}", module, saved, loggers=[csv])
        csv.save()
        runs[k] = module, trainer.global_step, saved.steps, (tmp_path / f"k{k}" / "metrics.csv").read_text()
    (one, stop1, saved1, csv1), (five, stop5, saved5, csv5) = runs[1], runs[5]
    assert stop1 == stop5 == one.rule.converged_at and stop5 % 5 and stop5 % 7  # stopped inside a stack
    assert saved1 == saved5 == list(range(7, stop1 + 1, 7))
    assert csv1 == csv5 and f"\n0,,,,,,,,{CFG.log_every - 1}," in csv1  # train rows at step 1 (0-based), ...
    for k, v in one.state_dict().items():
        assert torch.equal(five.state_dict()[k], v), k


def test_a_run_resumed_mid_window_stops_at_the_uninterrupted_runs_step(tmp_path):
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).normal(size=(64 * 8, 4)).astype(np.float16))  # 64 steps a pass
    torch.manual_seed(0)
    whole = SAEModule(4, CFG)
    trainer = _fit(tmp_path, acts, "whole", whole)
    stop = whole.rule.converged_at
    assert stop is not None and trainer.global_step == stop < 4 * 64  # stopped early, at an evaluation
    with pytest.raises(Killed):
        _fit(tmp_path, acts, "cut", SAEModule(4, CFG), KillAt(stop - 2))
    ckpt = last_checkpoint(tmp_path / "cut")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["global_step"] % CFG.eval_every != 0 and len(saved["convergence"]["rule"]["history"]) >= 1
    resumed = SAEModule(4, CFG)
    again = _fit(tmp_path, acts, "cut", resumed, ckpt=str(ckpt))
    assert again.global_step == stop and resumed.rule.converged_at == stop
    summary = resumed.training_summary(batch=8)  # what config.json records, from the buffer ddp_spawn hands back
    assert (summary["converged"], summary["converged_at_step"], summary["steps"]) == (True, stop, stop)
    assert summary["activations_seen"] == 8 * stop and summary["evaluations"] == stop // CFG.eval_every
    assert [e.loss for e in resumed.rule.history] == [e.loss for e in whole.rule.history]
    for k, v in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_until_budget_trains_the_whole_cap_and_still_records_the_rule(tmp_path):
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).normal(size=(64 * 8, 4)).astype(np.float16))
    module = SAEModule(4, replace(CFG, until="budget"))
    trainer = _fit(tmp_path, acts, "budget", module)
    assert trainer.global_step == 4 * 64 and module.rule.converged_at is not None
