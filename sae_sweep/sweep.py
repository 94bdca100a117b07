"""Stage ``sae``: one job of a sweep. GPT artifact -> harvested activations -> one trained SAE -> a dictionary artifact.

Every job of ``python train.py -m sae.dict_size=... sae.seed=...`` runs this. The GPT is read from the artifact
store, never trained here; the activation cache is shared by all jobs (the first harvests, the others wait and reuse).
As in pretraining, a rerun resumes an interrupted job from ``last.ckpt`` and returns a finished one's artifact.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sae_sweep import ConfigError, DataError, TrainingError
from sae_sweep.artifacts import (
    DICTIONARY_TYPE,
    MODEL_TYPE,
    WEIGHTS_FILE,
    Artifact,
    ArtifactStore,
    Paths,
    dictionary_name,
    load_gpt,
    write_dictionary,
)
from sae_sweep.data import open_prepared
from sae_sweep.harvest import HarvestConfig, harvest
from sae_sweep.lit import (
    LoggerConfig,
    TrainerConfig,
    build_loggers,
    build_trainer,
)
from sae_sweep.lit_sae import ActivationDataModule, SAEModule, evaluate_sae
from sae_sweep.runs import finish_wandb, finished_artifact, mark_finished, resolve_checkpoint
from sae_sweep.sae import SAEConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SAEJob:
    harvest: HarvestConfig
    sae: SAEConfig
    trainer: TrainerConfig
    logger: LoggerConfig
    paths: Paths
    gpt: str | None = None  # a model artifact (name, name:vN or folder); None: the newest in the store
    ckpt_path: str | None = "last"
    force: bool = False

    @property
    def name(self) -> str:
        return dictionary_name(self.harvest.layer, self.sae.dict_size, self.sae.seed)


def resolve_gpt(store: ArtifactStore, spec: str | None) -> Artifact:
    if spec is None:
        art = store.latest_of_type(MODEL_TYPE)
        if art is None:
            raise DataError(
                f"no pretrained GPT in the artifact store {store.root}: run `python train.py stage=pretrain` "
                "first (with the same paths.root), or point gpt= at a model folder"
            )
        return art
    art = store.get(spec)
    if art.type != MODEL_TYPE:
        raise DataError(f"gpt={spec!r} is an artifact of type {art.type!r}, not a {MODEL_TYPE!r}")
    return art


def run_id(job: SAEJob, acts_key: str) -> str:
    ident = {"acts": acts_key, "sae": asdict(job.sae), "world": job.trainer.devices * job.trainer.num_nodes}
    return f"{job.name}-{hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]}"


def run(job: SAEJob) -> Artifact:
    store = ArtifactStore(job.paths.store)
    gpt_art = resolve_gpt(store, job.gpt)
    gpt = load_gpt(gpt_art.path)
    n_layer = gpt.model.config.n_layer
    if not 0 <= job.harvest.layer < n_layer:
        raise ConfigError(f"harvest.layer={job.harvest.layer} is outside the model: it has layers 0..{n_layer - 1}")
    log.info("GPT %s (%s)", gpt_art.ref, gpt_art.path)
    tokens = open_prepared(gpt.data, job.paths.cache)
    model_digest = json.loads((gpt_art.path / "artifact.json").read_text())["files"][WEIGHTS_FILE]
    device = "cuda" if job.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"
    acts = harvest(gpt.model.to(device), model_digest, tokens, job.harvest, job.paths.cache)
    if acts.d_in != gpt.model.config.d_mlp:
        raise DataError(f"activations in {acts.path} have width {acts.d_in}, the GPT's MLP {gpt.model.config.d_mlp}")

    rid = run_id(job, acts.key)
    run_dir = job.paths.runs / rid
    if (finished := finished_artifact(run_dir, store, job.force)) is not None:
        return finished
    ckpt = resolve_checkpoint(job.ckpt_path, run_dir)
    if ckpt is not None:
        hparams = torch.load(ckpt, map_location="cpu", weights_only=False).get("hyper_parameters", {})
        if hparams.get("d_in") not in (None, acts.d_in):
            raise DataError(f"checkpoint {ckpt} is for d_in={hparams['d_in']}, but the activations have {acts.d_in}")
        log.info("resuming from %s", ckpt)

    module = SAEModule(acts.d_in, job.sae)
    datamodule = ActivationDataModule(acts.path / "train.npy", job.sae)
    n_steps = datamodule.dataset(world=job.trainer.devices * job.trainer.num_nodes).n_steps
    log.info("training %s: d_in=%d, %d steps of %d on %s", rid, acts.d_in, n_steps, job.sae.batch_size, acts.path)
    loggers = build_loggers(job.logger, run_dir, name=rid, group=job.name.rsplit("-s", 1)[0])
    trainer = build_trainer(
        job.trainer,
        run_dir=run_dir,
        max_steps=n_steps,
        loggers=loggers,
        ckpt_every=job.sae.ckpt_every,
        log_every=job.sae.log_every,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if not trainer.is_global_zero:
        return None  # type: ignore[return-value] - only rank 0 saves
    if trainer.interrupted or not trainer.state.finished:  # global_step stays 0 here under ddp_spawn
        raise TrainingError(f"SAE training of {rid} stopped early ({trainer.state.status}); rerun to resume")

    sae = module.sae.cpu().eval()
    metrics, counts = evaluate_sae(sae, acts.val, job.sae.l1_coeff)
    config = {
        "name": job.name,
        "d_in": acts.d_in,
        "layer": job.harvest.layer,
        "dict_size": job.sae.dict_size,
        "seed": job.sae.seed,
        "l1_coeff": job.sae.l1_coeff,
        "sae": job.sae.to_dict(),
        "harvest": asdict(job.harvest),
        "gpt": {"artifact": gpt_art.ref, "digest": model_digest},
        "activations": {"key": acts.key, "digest": acts.meta["files"]["train.npy"], "n_tokens": acts.train.shape[0]},
        "steps": n_steps,
        "run_id": rid,
        "metrics": metrics,
    }
    extra = {"metrics.csv": run_dir / "csv" / "metrics.csv"}
    histogram = run_dir / "feature_density.png"
    if _density_plot(counts, acts.val.shape[0], job.name, histogram):
        extra["feature_density.png"] = histogram
    artifact = store.save(
        job.name, DICTIONARY_TYPE, lambda folder: write_dictionary(folder, sae, config, counts, extra), config
    )
    finish_wandb(loggers, artifact, summary=metrics, uses=gpt_art.ref, density=(counts, acts.val.shape[0]))
    mark_finished(run_dir, artifact)
    log.info(
        "%s: val mse %.4g, fvu %.3f, L0 %.1f, dead %.1f%%; saved %s at %s",
        job.name,
        metrics["val/mse"],
        metrics["val/fvu"],
        metrics["val/l0"],
        100 * metrics["val/dead_fraction"],
        artifact.ref,
        artifact.path,
    )
    return artifact


def _density_plot(counts, n: int, title: str, path: Path) -> bool:
    """Histogram of log10 feature firing frequency on held-out activations (dead features in their own bar)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    live = counts[counts > 0]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if live.size:
        ax.hist(np.log10(live / n), bins=50, color="tab:blue", label=f"live ({live.size})")
    floor = np.log10(0.5 / n)
    ax.bar([floor], [int((counts == 0).sum())], width=0.1, color="tab:red", label=f"dead ({int((counts == 0).sum())})")
    ax.set(xlabel="log10 firing frequency (held-out activations)", ylabel="features", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
