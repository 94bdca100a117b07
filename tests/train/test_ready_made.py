"""The GPT shipped with the package: it is the default pretraining's product, with the validation loss it records,
installed as training would have saved it, refused when damaged, and trained instead when it does not fit."""

import hashlib
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from sae_sweep.config import pretrain_job
from sae_sweep.errors import DataError
from sae_sweep.store import Paths, sha256_file
from sae_sweep.train import pretrain, ready_made
from sae_sweep.train.gpt import MODEL_CONFIG_FILE, WEIGHTS_FILE, load_gpt
from sae_sweep.train.tokens import prepare

from ..conftest import compose

# The default pretraining job in process: the embedded corpus tokenised and the GPT's validation loss measured on it
# (5-20 s each on 2 cores), so out of the inner loop (-m "not slow and not faults").
WHOLE_STAGE = pytest.mark.slow


class _WouldTrain(Exception):
    """Raised in place of the 7-minute pretraining: the run chose to train."""


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default pretraining job on the embedded corpus, its token cache (tokenised once, ~5 s) and run id."""
    root = tmp_path_factory.mktemp("ready")
    job = replace(pretrain_job(compose(["stage=pretrain", "logger=none"])), paths=Paths(root))
    tokens = prepare(job.data, job.paths.cache, min_tokens=job.model.block_size)
    model_cfg = replace(job.model, vocab_size=tokens.tokenizer.vocab_size)
    return job, tokens, pretrain.run_id(replace(job, model=model_cfg), tokens.key)


@pytest.fixture(scope="module")
def losses():
    """Validation losses measured in this module, by the model's weights and the tokens: each takes 5-7 s on one
    thread, and the tests ask the same one up to four times (the shipped GPT on the embedded corpus)."""
    return {}


def weights_key(model, tokens) -> tuple[str, str]:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest(), tokens.key


@pytest.fixture
def fresh(default_run, losses, tmp_path, monkeypatch):
    """The default job on a store of its own (sharing the token cache); training replaced by _WouldTrain, and the
    validation loss measured once per weights (the same pure function of weights and tokens: the install's
    comparison with the recorded loss still runs on it)."""
    job, tokens, rid = default_run
    shutil.copytree(job.paths.cache, tmp_path / "cache")
    monkeypatch.setattr(pretrain, "fit_to_end", lambda *a, **k: (_ for _ in ()).throw(_WouldTrain()))
    measure = pretrain.evaluate

    def evaluate_once(model, tokens, cfg):
        key = weights_key(model, tokens)
        if key not in losses:
            losses[key] = measure(model, tokens, cfg)
        return losses[key]

    monkeypatch.setattr(pretrain, "evaluate", evaluate_once)
    return replace(job, paths=Paths(tmp_path)), rid


@WHOLE_STAGE
def test_the_shipped_gpt_is_the_default_runs_product_with_its_recorded_validation_loss(default_run, losses):
    job, tokens, rid = default_run
    shipped = ready_made.find(rid)
    assert shipped is not None, (
        f"no ready-made GPT for the default pretraining run {rid}: its recipe, model or tokens changed. Rebuild it "
        "(python train.py stage=pretrain ready_made=false) and package it (python -m sae_sweep.train.ready_made ...)"
    )
    model, config, made = ready_made.load(shipped)
    assert config["train"]["run_id"] == rid and made["val_loss"] == config["train"]["val_loss"]
    assert made["command"] == "python train.py stage=pretrain ready_made=false"
    here = losses[weights_key(model, tokens)] = pretrain.evaluate(model, tokens, job.pretrain)
    assert abs(here - made["val_loss"]) < 1e-5
    assert 4.2 < made["val_loss"] < 4.5  # the README's 4.35 nats/token (unigram entropy 6.51)
    assert (shipped / WEIGHTS_FILE).stat().st_size < 1_000_000


@WHOLE_STAGE
def test_stage_pretrain_installs_it_as_training_would_have_saved_it_and_reuses_it(fresh):
    job, rid = fresh
    art = pretrain.run(job)  # no training: _WouldTrain would end the test
    made = ready_made.load(ready_made.find(rid))[2]
    assert sha256_file(art.path / WEIGHTS_FILE) == made["sha256"]
    assert art.metadata["ready_made"] == made and art.metadata["run_id"] == rid
    loaded = load_gpt(art.path)  # the store's own checks pass: a complete GPT folder, tokenizer included
    assert loaded.config["train"]["ready_made"]["sha256"] == made["sha256"]
    assert pretrain.run(job).ref == art.ref  # the run is finished: the same artifact, no second version


@WHOLE_STAGE
def test_a_recipe_the_shipped_gpt_was_not_made_with_is_said_to_be_unapplied(fresh, caplog):
    """The run id leaves out how training runs (precision, compilation): the shipped GPT is installed, and a line
    says the asked-for precision was not applied, and how to have it."""
    job, _ = fresh
    with caplog.at_level(logging.WARNING):
        pretrain.run(replace(job, trainer=replace(job.trainer, precision="bf16-mixed")))
    assert ("the shipped GPT was made with trainer.precision=32-true, not the trainer.precision=bf16-mixed asked for, "
            "which was not applied (no training ran); `ready_made=false` trains") in caplog.text  # fmt: skip


@WHOLE_STAGE
def test_ready_made_false_trains_even_where_the_shipped_one_is_installed(fresh):
    job, _ = fresh
    pretrain.run(job)
    with pytest.raises(_WouldTrain):
        pretrain.run(replace(job, ready_made=False))
    with pytest.raises(_WouldTrain):
        pretrain.run(replace(job, force=True))


def test_a_damaged_shipped_gpt_is_refused_with_the_way_out(tmp_path):
    (shipped,) = [p for p in ready_made.HOME.iterdir() if (p / "made.json").is_file()]
    copy = tmp_path / shipped.name
    shutil.copytree(shipped, copy)
    data = bytearray((copy / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 1
    (copy / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"damaged.*ready_made=false"):
        ready_made.load(copy)


@WHOLE_STAGE
def test_a_validation_loss_that_differs_here_means_training_instead(fresh, tmp_path, monkeypatch, caplog):
    job, rid = fresh
    home = tmp_path / "home"
    shutil.copytree(ready_made.find(rid), home / rid)
    config = json.loads((home / rid / MODEL_CONFIG_FILE).read_text())
    config["train"]["val_loss"] += 1e-3  # as if this machine's tokens were not the ones it was trained on
    (home / rid / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    monkeypatch.setattr(ready_made, "HOME", home)
    with caplog.at_level(logging.WARNING), pytest.raises(_WouldTrain):
        pretrain.run(job)
    assert "training the GPT instead" in caplog.text
    assert not list(Path(job.paths.store).glob("gpt-*/v*")), "nothing installed"
