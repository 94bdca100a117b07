"""Stage ``pretrain``: corpus -> tokens -> a tiny GPT trained with Lightning -> a ``model`` artifact.

A run is identified by everything that shapes its result (corpus key, model, optimizer recipe, devices), so a rerun of
the same command finds the same run folder: it resumes from ``last.ckpt`` when interrupted, and returns the finished
artifact when complete (``force=true`` trains a new version instead).

``export_untrained`` makes the control of ``gpt=untrained``: the same GPT at the seeded initialisation pretraining
starts from, never trained, so that SAEs on a trained and an untrained model differ only in the training.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace

import numpy as np
import torch

from sae_sweep import rules
from sae_sweep.files import json_digest
from sae_sweep.stages import Stages
from sae_sweep.store import Artifact, ArtifactStore
from sae_sweep.train import ready_made
from sae_sweep.train.gpt import GPT, MODEL_TYPE, write_gpt
from sae_sweep.train.gpt_module import GPTModule, RandomBlocks, TokenDataModule
from sae_sweep.train.jobs import PretrainConfig, PretrainJob
from sae_sweep.train.loggers import build_loggers, closed_if_cut_short, finish_wandb
from sae_sweep.train.runs import finished_artifact, mark_finished, owned, resolve_checkpoint
from sae_sweep.train.tokenizer import TOKENIZER_FILE
from sae_sweep.train.tokens import TokenData, prepare
from sae_sweep.train.trainer import build_trainer, fit_to_end

log = logging.getLogger(__name__)


def wandb_axes(job: PretrainJob) -> dict:
    """The W&B config of a pretraining run: what tells it apart (corpus, seed, tag) on top, then every setting."""
    return {"stage": "pretrain", "corpus": job.data.corpus, "seed": job.pretrain.seed, "tag": job.pretrain.tag,
            "data": asdict(job.data), "model": asdict(job.model), "pretrain": asdict(job.pretrain),
            "trainer": asdict(job.trainer)}  # fmt: skip


def run_id(job: PretrainJob, data_key: str) -> str:
    """Name + digest of every setting that changes the trained weights."""
    ident = {
        "data": data_key,
        "model": asdict(job.model),
        "pretrain": asdict(job.pretrain),
        "world": job.trainer.devices * job.trainer.num_nodes,
    }
    return f"{job.name}-{json_digest(ident)[:10]}"


@torch.no_grad()
def evaluate(model: GPT, tokens: TokenData, cfg: PretrainConfig) -> float:
    """Mean loss over the run's fixed validation batches (the ones Lightning validates on)."""
    was_training = model.training
    model.eval()
    blocks = RandomBlocks(
        tokens.path / "val.bin", model.config.block_size, cfg.batch_size, cfg.seed + 1, n_batches=cfg.val_batches
    )
    losses = [model(x, y)[1].item() for x, y in blocks]
    model.train(was_training)
    return float(np.mean(losses))


def check(job: PretrainJob, machine: bool = True) -> None:
    """The rules between the job's values (rules.py), before any work; ``machine``: also what this machine must offer
    (its devices, how its processes are started), False where the job will run elsewhere (a SLURM sweep's check)."""
    rules.enforce(rules.pretrain_view(job), machine=machine)


def run(job: PretrainJob) -> Artifact:
    """Pretrain the GPT (resuming an interrupted run) and save it as a ``model`` artifact; a finished run returns its
    artifact."""
    check(job)
    stages = Stages()
    with stages("tokens") as made:
        tokens = prepare(job.data, job.paths.cache, min_tokens=job.model.block_size)
        made(f"{tokens.train.size:,} train tokens ({tokens.key})")
    model_cfg = replace(job.model, vocab_size=tokens.tokenizer.vocab_size)
    rid = run_id(replace(job, model=model_cfg), tokens.key)
    run_dir = job.paths.runs / rid
    store = ArtifactStore(job.paths.store)
    with owned(run_dir):  # one job at a time in a run folder: a second one with the same settings is refused
        return _pretrain_owned(job, tokens, model_cfg, rid, store, stages)


def _pretrain_owned(job: PretrainJob, tokens: TokenData, model_cfg, rid: str, store: ArtifactStore, stages) -> Artifact:
    """The pretraining run ``rid`` once its folder is held: reuse, install the ready-made GPT, or train and save."""
    run_dir = job.paths.runs / rid
    finished = finished_artifact(run_dir, store, job.force, job.name)
    if finished is not None and (job.ready_made or not finished.metadata.get("ready_made")):
        return finished  # (ready_made=false on a store holding the shipped GPT: train this run's own)
    shipped = ready_made.find(rid) if job.ready_made and not job.force else None
    if shipped is not None:
        with stages("install") as made:
            art = _install(job, shipped, tokens, rid, store)
            made(f"the ready-made {art.ref}" if art else "nothing: it does not match this machine's tokens")
        if art is not None:
            log.info("%s", stages.table(job.name))
            return art
    ckpt = resolve_checkpoint(job.ckpt_path, run_dir)
    torch.manual_seed(job.pretrain.seed)
    module = GPTModule(model_cfg, job.pretrain, compile=job.trainer.compile)
    log.info(
        "pretraining %s: %.2fM parameters (%.2fM without position embeddings) on %s, %d train tokens",
        job.name,
        module.model.num_params(False) / 1e6,
        module.model.num_params() / 1e6,
        tokens.meta["config"]["corpus"],
        tokens.train.size,
    )
    val_init = None if ckpt else evaluate(module.model, tokens, job.pretrain)
    if ckpt:
        log.info("resuming from %s", ckpt)
    loggers = build_loggers(
        job.logger, run_dir, name=rid, group="pretrain", job_type="pretrain", config=wandb_axes(job)
    )
    trainer = build_trainer(
        job.trainer,
        run_dir=run_dir,
        max_steps=job.pretrain.max_steps,
        loggers=loggers,
        ckpt_every=job.pretrain.ckpt_every,
        val_every=job.pretrain.val_every,
        grad_clip=job.pretrain.grad_clip,
    )
    datamodule = TokenDataModule(tokens.path / "train.bin", tokens.path / "val.bin", model_cfg.block_size, job.pretrain)
    with stages("pretrain") as made:
        fit_to_end(trainer, module, datamodule, ckpt, what=f"pretraining of {rid}")
        made(f"{job.pretrain.max_steps} steps")
    if not trainer.is_global_zero:
        return None  # type: ignore[return-value] - only rank 0 exports
    with stages("save") as made, closed_if_cut_short(loggers):
        art = _export(job, module.model.cpu().float(), tokens, rid, val_init, trainer.world_size, loggers, store)
        made(art.ref)
    log.info("%s", stages.table(job.name))
    return art


def _export(job, model: GPT, tokens: TokenData, rid: str, val_init, world: int, loggers, store) -> Artifact:
    """The trained GPT's final validation loss, its folder in the store, the W&B upload, one line to say so."""
    steps = job.pretrain.max_steps
    val_final = evaluate(model, tokens, job.pretrain)
    train_info = {
        "run_id": rid,
        "steps": steps,
        "tokens_seen": steps * job.pretrain.batch_size * model.config.block_size * world,
        "val_loss_init": val_init,
        "val_loss": val_final,
        "unigram_entropy": tokens.meta["unigram_entropy"],
        "pretrain": asdict(job.pretrain),
        "trainer": asdict(job.trainer),
    }
    metadata = {"model": model.config.to_dict(), "data_key": tokens.key, **train_info}
    artifact = store.save(
        job.name,
        MODEL_TYPE,
        lambda folder: write_gpt(folder, model, tokens.path / TOKENIZER_FILE, tokens.meta, train_info),
        metadata,
    )
    finish_wandb(loggers, artifact)
    mark_finished(job.paths.runs / rid, artifact)
    log.info(
        "%s: val loss %.3f nats/token (unigram entropy %.3f, at init %s); saved %s at %s",
        job.name,
        val_final,
        tokens.meta["unigram_entropy"],
        f"{val_init:.3f}" if val_init else "n/a",
        artifact.ref,
        artifact.path,
    )
    return artifact


def _install(job: PretrainJob, shipped, tokens: TokenData, rid: str, store: ArtifactStore) -> Artifact | None:
    """The shipped GPT of run ``rid`` saved as this run's artifact, once its validation loss here matches the
    recorded one; None if it does not (the caller trains)."""
    model, config, made = ready_made.load(shipped)
    val = evaluate(model, tokens, job.pretrain)
    if not ready_made.usable(shipped, val, config["train"]["val_loss"]):
        return None
    train_info = {**config["train"], "ready_made": made}
    metadata = {"model": model.config.to_dict(), "data_key": tokens.key, **train_info}
    run_dir = job.paths.runs / rid
    loggers = build_loggers(
        job.logger, run_dir, name=rid, group="pretrain", job_type="pretrain", config=wandb_axes(job)
    )
    with closed_if_cut_short(loggers):
        artifact = store.save(
            job.name,
            MODEL_TYPE,
            lambda folder: write_gpt(folder, model, tokens.path / TOKENIZER_FILE, tokens.meta, train_info),
            metadata,
        )
        finish_wandb(loggers, artifact, summary={"val/loss": val, "ready_made": True})
        mark_finished(run_dir, artifact)
    log.info(
        "%s: took the GPT shipped with sae-sweep, made by `%s` on %s (commit %s); val loss %.3f nats/token here, as "
        "recorded; saved %s at %s. `python train.py stage=pretrain ready_made=false` trains it here instead",
        job.name, made["command"], made["made"], made["commit"][:10], val, artifact.ref, artifact.path,
    )  # fmt: skip
    _say_recipe_differs(job, config["train"].get("trainer"))
    return artifact


def _say_recipe_differs(job: PretrainJob, recorded) -> None:
    """A warning when the training settings asked for (the ones the run id leaves out, as they do not change what a
    GPT is: precision, compilation) differ from those the shipped GPT was made with: they were not applied."""
    recorded = recorded if isinstance(recorded, dict) else {}
    mine = asdict(job.trainer)
    differ = [k for k in ("precision", "compile") if k in recorded and recorded[k] != mine[k]]
    if differ:
        log.warning(
            "the shipped GPT was made with %s, not the %s asked for, which was not applied (no training ran); "
            "`ready_made=false` trains the GPT with it",
            ", ".join(f"trainer.{k}={recorded[k]}" for k in differ),
            ", ".join(f"trainer.{k}={mine[k]}" for k in differ),
        )


def export_untrained(job: PretrainJob) -> Artifact:
    """The ``model`` artifact ``gpt-<corpus>-s<seed>-untrained``: the GPT pretraining would start from, never trained.

    Same token cache, tokenizer, model config and seeded initialisation as ``run(job)`` (torch.manual_seed(seed),
    then the model), zero steps. The weights are a pure function of (corpus, model config, seed), so a rebuild gives
    the same sha256; the artifact is built once, under a file lock so concurrent sweep jobs save one version, and
    reused while its recorded ``init_id`` matches (another model config or corpus saves a new version).
    """
    tokens = prepare(job.data, job.paths.cache, min_tokens=job.model.block_size)
    model_cfg = replace(job.model, vocab_size=tokens.tokenizer.vocab_size)
    init_id = json_digest({"data": tokens.key, "model": asdict(model_cfg), "seed": job.pretrain.seed})[:10]
    val = float("nan")

    def make():
        nonlocal val
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            torch.manual_seed(job.pretrain.seed)
            model = GPT(model_cfg)
        model.eval()
        val = evaluate(model, tokens, job.pretrain)
        train_info = {
            "untrained": True,
            "init_id": init_id,
            "steps": 0,
            "tokens_seen": 0,
            "val_loss_init": val,
            "val_loss": val,
            "unigram_entropy": tokens.meta["unigram_entropy"],
            "pretrain": asdict(job.pretrain),
        }
        metadata = {"model": model_cfg.to_dict(), "data_key": tokens.key, **train_info}
        return lambda folder: write_gpt(folder, model, tokens.path / TOKENIZER_FILE, tokens.meta, train_info), metadata

    store = ArtifactStore(job.paths.store)
    artifact, made = store.save_once(
        job.untrained_name, MODEL_TYPE, same=lambda meta: meta.get("init_id") == init_id, make=make
    )
    if made:
        log.info(
            "untrained GPT (seed %d, val loss %.3f): saved %s at %s",
            job.pretrain.seed,
            val,
            artifact.ref,
            artifact.path,
        )
    else:
        log.info("reusing untrained GPT %s", artifact.ref)
    return artifact
