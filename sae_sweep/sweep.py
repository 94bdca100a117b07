"""Stage ``sae``: one job of a sweep. GPT artifact -> harvested activations -> one trained SAE -> a dictionary artifact.

Every job of ``python train.py -m sae.dict_size=... sae.seed=...`` runs this. The GPT is read from the artifact
store, never trained here; the activation cache is shared by all jobs (the first harvests, the others wait and reuse).
As in pretraining, a rerun resumes an interrupted job from ``last.ckpt`` and returns a finished one's artifact.

Two controls swap the activations and keep everything else: ``data=synthetic`` trains on generated activations with
known true features (no GPT at all), and ``gpt=untrained`` on those of the seeded GPT pretraining starts from. Their
dictionaries carry the variant in their names (``sae-L2-J1024-s0-untrained``), so they sit beside the main sweep's.
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
from sae_sweep.harvest import Activations, HarvestConfig, harvest
from sae_sweep.lit import (
    LoggerConfig,
    TrainerConfig,
    build_loggers,
    build_trainer,
    fit,
)
from sae_sweep.lit_sae import ActivationDataModule, SAEModule, evaluate_sae
from sae_sweep.pretrain import PretrainJob, export_untrained
from sae_sweep.runs import finish_wandb, finished_artifact, mark_finished, resolve_checkpoint
from sae_sweep.sae import SAEConfig
from sae_sweep.synthetic import SyntheticConfig, synthetic_activations

log = logging.getLogger(__name__)
UNTRAINED = "untrained"  # gpt=untrained: the control GPT, never trained
DEFAULT_L1 = SAEConfig().l1_coeff  # a dictionary trained at another l1_coeff says so in its name


@dataclass(frozen=True)
class SAEJob:
    harvest: HarvestConfig
    sae: SAEConfig
    trainer: TrainerConfig
    logger: LoggerConfig
    paths: Paths
    gpt: str | None = None  # a model artifact (name, name:vN or folder); None: the newest trained one; "untrained"
    ckpt_path: str | None = "last"
    force: bool = False
    synthetic: SyntheticConfig | None = None  # data=synthetic: generated activations with known features, no GPT
    untrained: PretrainJob | None = None  # gpt=untrained: the corpus, model and seed pretraining would start from

    @property
    def variant(self) -> str:
        """What sets this job apart from the note's sweep, as a name suffix: "", "untrained", "resample-l1-0.003"..."""
        parts = []
        if self.synthetic is not None:
            parts.append("synthetic")
        if self.gpt == UNTRAINED:
            parts.append(UNTRAINED)
        if self.sae.resample_every > 0:
            parts.append("resample")
        if self.sae.l1_coeff != DEFAULT_L1:
            parts.append(f"l1-{self.sae.l1_coeff:g}")
        return "-".join(parts)

    @property
    def name(self) -> str:
        return dictionary_name(self.harvest.layer, self.sae.dict_size, self.sae.seed, self.variant)

    @property
    def group(self) -> str:
        """The W&B group: the jobs of one size and variant, across seeds."""
        return f"sae-L{self.harvest.layer}-J{self.sae.dict_size}" + (f"-{self.variant}" if self.variant else "")


def resolve_gpt(store: ArtifactStore, spec: str | None) -> Artifact:
    if spec is None:  # the newest trained GPT: an untrained control is only ever used by name
        trained = [store.get(n, verify_files=False) for n in store.names(MODEL_TYPE)]
        trained = [art for art in trained if not art.metadata.get(UNTRAINED)]
        if not trained:
            raise DataError(
                f"no pretrained GPT in the artifact store {store.root}: run `python train.py stage=pretrain` "
                "first (with the same paths.root), or point gpt= at a model folder"
            )
        return store.get(str(max(trained, key=lambda art: art.path.stat().st_mtime_ns).path))
    art = store.get(spec)
    if art.type != MODEL_TYPE:
        raise DataError(f"gpt={spec!r} is an artifact of type {art.type!r}, not a {MODEL_TYPE!r}")
    return art


def run_id(job: SAEJob, acts_key: str) -> str:
    ident = {"acts": acts_key, "sae": asdict(job.sae), "world": job.trainer.devices * job.trainer.num_nodes}
    return f"{job.name}-{hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]}"


def _check_layer(layer: int, n_layer: int) -> None:
    if not 0 <= layer < n_layer:
        raise ConfigError(f"harvest.layer={layer} is outside the model: it has layers 0..{n_layer - 1}")


def gpt_activations(job: SAEJob, store: ArtifactStore) -> tuple[Activations, dict, str | None]:
    """The GPT's harvested activations, what config.json records of their source, and the W&B artifact they used."""
    if job.gpt == UNTRAINED:
        if job.untrained is None:
            raise ConfigError("gpt=untrained needs the corpus, model and pretrain settings (SAEJob.untrained)")
        _check_layer(job.harvest.layer, job.untrained.model.n_layer)  # before building anything
        gpt_art = export_untrained(job.untrained)
    else:
        gpt_art = resolve_gpt(store, job.gpt)
    gpt = load_gpt(gpt_art.path)
    _check_layer(job.harvest.layer, gpt.model.config.n_layer)
    log.info("GPT %s (%s)", gpt_art.ref, gpt_art.path)
    tokens = open_prepared(gpt.data, job.paths.cache)
    model_digest = json.loads((gpt_art.path / "artifact.json").read_text())["files"][WEIGHTS_FILE]
    device = "cuda" if job.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"
    acts = harvest(gpt.model.to(device), model_digest, tokens, job.harvest, job.paths.cache)
    if acts.d_in != gpt.model.config.d_mlp:
        raise DataError(f"activations in {acts.path} have width {acts.d_in}, the GPT's MLP {gpt.model.config.d_mlp}")
    source = {"gpt": {"artifact": gpt_art.ref, "digest": model_digest}, "synthetic": None}
    return acts, source, None if gpt_art.metadata.get(UNTRAINED) else gpt_art.ref  # the control GPT is not on W&B


def run(job: SAEJob) -> Artifact:
    world = job.trainer.devices * job.trainer.num_nodes
    if job.sae.resample_every > 0 and world > 1:  # refused before any harvest, not at fit time
        raise ConfigError(
            f"sae.resample_every > 0 needs one process, but trainer asks for {world}: use trainer=cpu or trainer=gpu, "
            "or set sae.resample_every=0"
        )
    store = ArtifactStore(job.paths.store)
    if job.synthetic is not None:
        acts, features = synthetic_activations(
            job.synthetic, job.harvest.n_tokens, job.harvest.n_val_tokens, job.paths.cache, store
        )
        source, uses = {"gpt": None, "synthetic": {**asdict(job.synthetic), "features": features.ref}}, None
    else:
        acts, source, uses = gpt_activations(job, store)

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
    loggers = build_loggers(job.logger, run_dir, name=rid, group=job.group)
    trainer = build_trainer(
        job.trainer,
        run_dir=run_dir,
        max_steps=n_steps,
        loggers=loggers,
        ckpt_every=job.sae.ckpt_every,
        log_every=job.sae.log_every,
    )
    fit(trainer, module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
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
        "variant": job.variant,
        "d_in": acts.d_in,
        "layer": job.harvest.layer,
        "dict_size": job.sae.dict_size,
        "seed": job.sae.seed,
        "l1_coeff": job.sae.l1_coeff,
        "sae": job.sae.to_dict(),
        "harvest": asdict(job.harvest),
        **source,
        "activations": {"key": acts.key, "digest": acts.meta["files"]["train.npy"], "n_tokens": acts.train.shape[0]},
        "steps": n_steps,
        "n_resampled": module.n_resampled,
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
    finish_wandb(loggers, artifact, summary=metrics, uses=uses, density=(counts, acts.val.shape[0]))
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
