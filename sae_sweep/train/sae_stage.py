"""Stage ``sae``: one job of a sweep. GPT artifact -> harvested activations -> one trained SAE -> a dictionary artifact.

Every job of ``python train.py -m sae.dict_size=... sae.seed=...`` runs this. The GPT is read from the artifact
store, never trained here; the activation cache is shared by all jobs (the first harvests, the others wait and reuse).
As in pretraining, a rerun resumes an interrupted job from ``last.ckpt`` and returns a finished one's artifact.

Two controls swap the activations and keep everything else: ``data=synthetic`` trains on generated activations with
known true features (no GPT at all), and ``gpt=untrained`` on those of the seeded GPT pretraining starts from. Their
dictionaries carry the variant in their names (``sae-L2-J1024-s0-untrained``), so they sit beside the main sweep's.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from sae_sweep import rules
from sae_sweep.activations import Activations
from sae_sweep.dictionary import DICTIONARY_TYPE, DictionaryConfig, write_dictionary
from sae_sweep.errors import ConfigError, DataError
from sae_sweep.files import json_digest
from sae_sweep.interop import saelens
from sae_sweep.lineage import reference
from sae_sweep.stages import Stages
from sae_sweep.store import Artifact, ArtifactStore, file_digest
from sae_sweep.train import snapshots
from sae_sweep.train.batches import ActivationDataModule
from sae_sweep.train.gpt import MODEL_TYPE, WEIGHTS_FILE, load_gpt
from sae_sweep.train.harvest import harvest
from sae_sweep.train.jobs import UNTRAINED, SAEJob
from sae_sweep.train.loggers import build_loggers, closed_if_cut_short, finish_wandb
from sae_sweep.train.pretrain import export_untrained
from sae_sweep.train.runs import finished_artifact, mark_finished, owned, resolve_checkpoint
from sae_sweep.train.sae_module import SAEModule, evaluate_sae
from sae_sweep.train.synthetic import synthetic_activations
from sae_sweep.train.tokens import open_prepared
from sae_sweep.train.trainer import TrainerConfig, build_trainer, fit_to_end

log = logging.getLogger(__name__)


def resolve_gpt(store: ArtifactStore, spec: str | None) -> Artifact:
    if spec is None:  # the newest trained GPT: an untrained control or a tagged GPT is only ever used by name
        models = [store.get(n, verify_files=False) for n in store.names(MODEL_TYPE)]
        trained = [art for art in models if not art.metadata.get(UNTRAINED) and not gpt_tag(art)]
        if not trained:
            tagged = sorted(art.name for art in models if gpt_tag(art))
            raise DataError(
                f"no pretrained GPT in the artifact store {store.root}: run `python train.py stage=pretrain` "
                "first (with the same paths.root), or point gpt= at a model folder"
                + (f" or at a tagged GPT by name ({', '.join(tagged)})" if tagged else "")
            )
        return store.get(str(max(trained, key=lambda art: art.path.stat().st_mtime_ns).path))
    art = store.get(spec)
    if art.type != MODEL_TYPE:
        raise DataError(f"gpt={spec!r} is an artifact of type {art.type!r}, not a {MODEL_TYPE!r}")
    return art


def gpt_tag(art: Artifact) -> str:
    """The ``pretrain.tag`` a GPT artifact was trained with ("" for the default GPT and the untrained control)."""
    if art.metadata.get(UNTRAINED):
        return ""
    return (art.metadata.get("pretrain") or {}).get("tag") or ""


def run_id(job: SAEJob, acts_key: str) -> str:
    ident = {"acts": acts_key, "sae": asdict(job.sae), "world": job.world}
    return f"{job.name}-{json_digest(ident)[:10]}"


def _check_layer(layer: int, n_layer: int) -> None:
    if not 0 <= layer < n_layer:
        raise ConfigError(f"harvest.layer={layer} is outside the model: it has layers 0..{n_layer - 1}")


def gpt_activations(job: SAEJob, store: ArtifactStore) -> tuple[Activations, dict, str | None, str]:
    """The GPT's harvested activations, what config.json records of their source, the W&B artifact they used, and
    the GPT's tag."""
    if job.gpt == UNTRAINED:
        if job.untrained is None:
            raise ConfigError("gpt=untrained needs the corpus, model and pretrain settings (SAEJob.untrained)")
        gpt_art = export_untrained(job.untrained)
    else:
        gpt_art = resolve_gpt(store, job.gpt)
    gpt = load_gpt(gpt_art.path)
    _check_layer(job.harvest.layer, gpt.model.config.n_layer)
    check(job, d_in=gpt.model.config.d_mlp)  # the memory estimate again, at the GPT's width: before the harvest
    tokens = open_prepared(gpt.data, job.paths.cache)
    model_digest = file_digest(gpt_art, WEIGHTS_FILE)
    device = "cuda" if job.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"
    acts = harvest(gpt.model.to(device), model_digest, tokens, job.harvest, job.paths.cache)
    if acts.d_in != gpt.model.config.d_mlp:
        raise DataError(f"activations in {acts.path} have width {acts.d_in}, the GPT's MLP {gpt.model.config.d_mlp}")
    val_loss = gpt_art.metadata.get("val_loss")  # the GPT's quality beside the dictionaries trained on it
    source = {"gpt": {"artifact": gpt_art.ref, "digest": model_digest, "val_loss": val_loss}, "synthetic": None}
    source["gpt_metadata"] = gpt_art.metadata  # the SAELens export's context size and corpus
    uses = None if gpt_art.metadata.get(UNTRAINED) else reference(gpt_art.path)  # the control GPT is not on W&B
    return acts, source, uses, gpt_tag(gpt_art)


def check(job: SAEJob, d_in: int | None = None, machine: bool = True) -> None:
    """The rules between the job's values (rules.py), checked before any harvest or training: ConfigError naming the
    keys and the fix. ``machine``: also what this machine must offer (devices, memory for the SAE at width ``d_in``,
    known from the config for synthetic data and the untrained GPT; a floor without it); False where the job will
    run elsewhere (a SLURM sweep checked on the login node)."""
    rules.enforce(rules.sae_view(job, d_in), machine=machine)


def sae_trainer_config(job: SAEJob) -> TrainerConfig:
    """The trainer settings the SAE trains under: ``trainer``'s, at ``sae.precision`` (fp32 unless asked)."""
    return replace(job.trainer, precision=job.sae.precision)


def run(job: SAEJob) -> Artifact:
    """Train one SAE on the job's activations and save its dictionary; a finished run returns its artifact."""
    check(job)
    store = ArtifactStore(job.paths.store)
    stages = Stages()
    with stages("activations") as made:
        if job.synthetic is not None:
            acts, features = synthetic_activations(
                job.synthetic, job.harvest.n_tokens, job.harvest.n_val_tokens, job.paths.cache, store
            )
            source, uses = {"gpt": None, "synthetic": {**job.synthetic.recorded(), "features": features.ref}}, None
        else:
            acts, source, uses, tag = gpt_activations(job, store)
            job = replace(job, gpt_tag=tag)  # before anything is named: a tagged GPT's SAEs are a variant
        made(f"{acts.train.shape[0]:,} rows ({acts.key})")
    rid = run_id(job, acts.key)
    run_dir = job.paths.runs / rid
    with owned(run_dir):  # one job at a time in a run folder: a second one with the same settings is refused
        if (finished := finished_artifact(run_dir, store, job.force, job.name)) is not None:
            return finished
        with stages("train") as made:
            module, trainer, loggers = _train(job, acts, rid, run_dir, uses)
            made(f"{trainer.global_step:,} steps")
        if not trainer.is_global_zero:
            return None  # type: ignore[return-value] - only rank 0 saves
        with stages("evaluate, save") as made, closed_if_cut_short(loggers):
            art = _save(job, acts, source, uses, rid, run_dir, module, loggers, store)
            made(art.ref)
    log.info("%s", stages.table(job.name))
    return art


def _to_wandb(job: SAEJob, loggers, artifact: Artifact, config: DictionaryConfig, rates, uses, histogram: Path):
    """The dictionary to the W&B run, with the summary a runs table filters by (``final/*``: config.json's held-out
    metrics on every validation row, apart from the ``heldout/*`` curves of the stopping rule's evaluations; how
    training ended), the feature densities as a histogram and the figure, and a description of the artifact."""
    ended = {k: config.training.get(k) for k in ("converged", "converged_at_step", "activations_seen", "steps")}
    m = config.metrics
    how = f"converged at step {ended['converged_at_step']}" if ended["converged"] else "did not converge"
    description = (
        f"{job.name}: layer {job.harvest.layer}, J={job.sae.dict_size}, seed {job.sae.seed}, "
        f"{job.sae.sparsity_label}; held-out FVU {m['val/fvu']:.3f}, L0 {m['val/l0']:.1f}; {how}"
    )
    live = rates[rates > 0]
    histograms = {"feature_density/log10_frequency": np.log10(live)} if live.size else {}
    final = {f"final/{k.split('/', 1)[-1]}": v for k, v in m.items()}  # not heldout/*, the rule's smaller samples
    finish_wandb(loggers, artifact, summary=final | ended, uses=uses, histograms=histograms,
                 images={"feature_density": histogram}, description=description,
                 aliases=("converged",) if ended["converged"] else ())  # fmt: skip


def wandb_axes(job: SAEJob, acts: Activations, gpt: str | None) -> dict:
    """The W&B config of an SAE run: the axes that tell a sweep's runs apart as top-level keys, then every setting."""
    return {"stage": "sae", "layer": job.harvest.layer, "dict_size": job.sae.dict_size, "seed": job.sae.seed,
            "variant": job.variant or "(note)", "arch": job.sae.arch, "l1_coeff": job.sae.l1_coeff,
            "gpt": gpt or ("synthetic" if job.synthetic else None), "activations": acts.key,
            "harvest": asdict(job.harvest), "sae": job.sae.to_dict(), "trainer": asdict(job.trainer),
            "synthetic": job.synthetic.recorded() if job.synthetic else None}  # fmt: skip


def _train(job: SAEJob, acts: Activations, rid: str, run_dir: Path, gpt: str | None = None):
    """Fit the SAE (resuming from last.ckpt when there is one); returns the module, the trainer and its loggers."""
    ckpt = resolve_checkpoint(job.ckpt_path, run_dir)
    if ckpt is not None:
        hparams = torch.load(ckpt, map_location="cpu", weights_only=False).get("hyper_parameters", {})
        if hparams.get("d_in") not in (None, acts.d_in):
            raise DataError(f"checkpoint {ckpt} is for d_in={hparams['d_in']}, but the activations have {acts.d_in}")
        log.info("resuming from %s", ckpt)
    module = SAEModule(acts.d_in, job.sae)
    module.held_out = torch.from_numpy(np.asarray(acts.val[: job.sae.eval_rows], dtype=np.float32))
    module.snapshot_dir = run_dir / snapshots.SNAPSHOT_DIR
    datamodule = ActivationDataModule(acts.path / "train.npy", job.sae)
    n_steps = datamodule.dataset(world=job.world).n_steps
    log.info(
        "training %s: J=%d, %s, until %s (at most %d steps of %d activations, d_in=%d, %d torch threads)",
        job.name,
        job.sae.dict_size,
        job.sae.sparsity_label,
        job.sae.until,
        n_steps,
        job.sae.batch_size,
        acts.d_in,
        torch.get_num_threads(),
    )
    loggers = build_loggers(job.logger, run_dir, name=rid, group=job.group, job_type="train-sae",
                            config=wandb_axes(job, acts, gpt))  # fmt: skip
    trainer = build_trainer(
        sae_trainer_config(job),
        run_dir=run_dir,
        max_steps=n_steps,
        loggers=loggers,
        ckpt_every=job.sae.ckpt_every,
        log_every=job.sae.log_every,
    )
    fit_to_end(trainer, module, datamodule, ckpt, what=f"SAE training of {rid}")
    return module, trainer, loggers


def _save(job, acts, source, uses, rid, run_dir, module, loggers, store) -> Artifact:
    """Held-out metrics, the dictionary folder in the store, the W&B upload, the done marker, one line to say so."""
    sae = module.sae.cpu().eval()
    metrics, counts = evaluate_sae(sae, acts.val, job.sae.l1_coeff)
    steps = int(module.progress[0])  # the trainer's global_step is 0 in ddp_spawn's main process
    extra = {"metrics.csv": run_dir / "csv" / "metrics.csv"}
    if not extra["metrics.csv"].is_file():  # deleted, or a run resumed at its last step logs no row
        log.warning("%s is missing: the dictionary is saved without its training curves", extra.pop("metrics.csv"))
    training = module.training_summary(job.sae.batch_size * job.world)
    training["threads"] = torch.get_num_threads()  # sums split over more threads differ in the last bits
    folder = run_dir / snapshots.SNAPSHOT_DIR
    if job.sae.snapshot_first > 0:  # the axis's last point: the final state, firing counted on the same rows
        snapshots.take(sae, module.held_out, job.sae.l1_coeff, steps, job.sae.batch_size * job.world, folder)
    expected = snapshots.snapshot_steps(job.sae.snapshot_first, job.sae.batch_size * job.world, steps)
    taken = snapshots.gather(
        folder, steps, run_dir / snapshots.SNAPSHOTS_FILE, expected if job.sae.snapshot_first else ()
    )
    if taken is not None:
        training["snapshots"] = taken
        extra[snapshots.SNAPSHOTS_FILE] = run_dir / snapshots.SNAPSHOTS_FILE
    config = DictionaryConfig(
        name=job.name,
        variant=job.variant,
        d_in=acts.d_in,
        layer=job.harvest.layer,
        dict_size=job.sae.dict_size,
        seed=job.sae.seed,
        l1_coeff=job.sae.l1_coeff,
        sae=job.sae.to_dict(),
        harvest=asdict(job.harvest),
        gpt=source["gpt"],
        synthetic=source["synthetic"],
        activations={"key": acts.key, "digest": acts.meta["files"]["train.npy"], "n_tokens": acts.train.shape[0]},
        steps=steps,
        n_resampled=module.n_resampled,
        run_id=rid,
        metrics=metrics,
        training=training,
    )
    histogram = run_dir / "feature_density.png"
    from sae_sweep.train.density import density_figure  # noqa: PLC0415 - matplotlib only for this one figure

    density_figure(counts, acts.val.shape[0], job.name, histogram)
    extra["feature_density.png"] = histogram
    artifact = store.save(
        job.name,
        DICTIONARY_TYPE,
        lambda folder: write_with_export(folder, sae, config, counts, extra, source.get("gpt_metadata")),
        asdict(config),
    )
    _to_wandb(job, loggers, artifact, config, counts / acts.val.shape[0], uses, histogram)
    mark_finished(run_dir, artifact)
    how = config.training
    ended = f"converged at step {how['converged_at_step']}" if how["converged"] else "did NOT converge"
    log.info(
        "%s: %s (%d activations); val fvu %.3f, L0 %.1f, dead %.1f%% (mse %.4g); saved %s at %s",
        job.name,
        ended,
        how["activations_seen"],
        metrics["val/fvu"],
        metrics["val/l0"],
        100 * metrics["val/dead_fraction"],
        metrics["val/mse"],
        artifact.ref,
        artifact.path,
    )
    return artifact


def write_with_export(
    folder: Path, sae, config: DictionaryConfig, counts, extra: dict | None = None, gpt_metadata: dict | None = None
) -> None:
    """The dictionary folder of a trained ``sae``, and in its ``saelens/`` the same SAE as SAELens opens it (the GPT's
    metadata gives the export its context size and corpus)."""
    tensors = sae.state_tensors()
    write_dictionary(folder, tensors, config, counts, extra)
    saelens.write(folder / saelens.SAELENS_DIR, tensors, config, counts, sae.architecture, gpt_metadata)
