"""Every rule that relates two or more config keys, in one list (``RULES``), each with an example that breaks it.

A key's own type and range are checked where its dataclass is made (``SAEConfig.__post_init__``, ...); what a value
means beside another one is checked here. Each ``Rule`` names the keys it relates, checks a ``View`` of a job's values
by dotted key (``v["sae.k"]``) and returns one line naming every one of those keys and the fix (or None), and carries
the overrides that break it (``breaks``) and, where one helps, overrides that keep it (``keeps``: the same with one
key changed, mostly set back to its default). tests/test_rules.py reads the list: every example breaks its rule and
only it, in one line.

When a rule is checked (``at``):

* ``section``: when its section's dataclass is made, so a library call that builds one is refused too (the rules that
  lived in ``__post_init__`` before this module); ``enforce(View({"sae": cfg}), at="section")``.
* ``job``: when ``config`` builds a job from a Hydra config and when a stage checks its job before any work
  (``sae_stage.check``, ``pretrain.check``, ``analysis.job.check``; ``sweep_check`` for every job of a multirun).
* ``machine=True`` rules read the machine the job runs on (its devices, its memory, whether SLURM started its
  processes): they are checked only where the job will run (``enforce(..., machine=True)``), not by a SLURM sweep's
  check on the login node.

This module imports no side of the package: what a rule needs to know of an architecture it reads from the
``SAEConfig`` in the view (``arch_resamples``, ``arch_params``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

from sae_sweep import memory
from sae_sweep.errors import ConfigError

SYNTHETIC = "synthetic"  # data.corpus of generated activations (truth.CORPUS)
SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")  # strategies that start their processes from this one
STEP_KEYS = ("harvest.n_tokens", "sae.batch_size", "trainer.devices", "trainer.num_nodes", "sae.epochs")


class View:
    """A job's values by dotted key: the fields of its built sections (checked dataclasses, by section name) and its
    top-level values (``stage``, ``gpt``...). ``d_in``: the activation width when known (synthetic data, the untrained
    GPT, a loaded GPT), else None."""

    def __init__(self, sections: dict | None = None, top: dict | None = None, d_in: int | None = None,
                 d_in_from: str = "") -> None:  # fmt: skip
        self.sections = {k: v for k, v in (sections or {}).items() if v is not None}
        self.top = dict(top or {})
        self.d_in, self.d_in_from = d_in, d_in_from  # the width, and the keys it comes from ("data.d_in")

    def __contains__(self, key: str) -> bool:
        section, _, name = key.partition(".")
        if not name:
            return key in self.top
        obj = self.sections.get(section)
        return obj is not None and name in {f.name for f in dataclasses.fields(obj)}

    def __getitem__(self, key: str):
        section, _, name = key.partition(".")
        return getattr(self.sections[section], name) if name else self.top[key]

    def section(self, name: str):
        return self.sections[name]


@dataclass(frozen=True)
class Rule:
    name: str  # short, unique
    keys: tuple[str, ...]  # the keys it relates: its message names each one
    check: Callable[[View], str | None]  # the one-line message when broken, else None
    breaks: tuple[str, ...]  # overrides (of `config`'s yaml) that break this rule and no other check
    keeps: tuple[str, ...] | None = None  # `breaks` with one key changed: satisfies it (None: machine-dependent)
    config: str = "train"  # train | analyze: the entry point whose config the examples override
    at: str = "job"  # section | job (see the module's docstring)
    machine: bool = False  # reads the machine the job runs on
    reads: tuple[str, ...] = ()  # keys it reads beyond `keys` (not named in its message)

    def applies(self, v: View) -> bool:
        return all(k in v for k in self.keys + self.reads)


def enforce(v: View, *, at: str = "job", machine: bool = False) -> None:
    """ConfigError with the first broken rule's message (``.rule``: its name) among those that apply to ``v``."""
    for rule in RULES:
        if (at == "section" and rule.at != "section") or (rule.machine and not machine) or not rule.applies(v):
            continue
        message = rule.check(v)
        if message is not None:
            error = ConfigError(message)
            error.rule = rule.name  # type: ignore[attr-defined] - which rule, for tests and callers
            raise error


# ---- the views of each stage's job (duck-typed: this module imports neither side) ----


def sae_view(job, d_in: int | None = None) -> View:
    """An ``SAEJob``'s values; the untrained control's data, model and pretrain sections when gpt=untrained."""
    untrained, d_in_from = job.untrained, "the GPT's MLP"
    if d_in is None and job.synthetic is not None:
        d_in, d_in_from = job.synthetic.d_in, "data.d_in"
    elif d_in is None and untrained is not None:
        d_in, d_in_from = untrained.model.d_mlp, "model.n_embd x model.mlp_ratio"
    sections = {"harvest": job.harvest, "sae": job.sae, "trainer": job.trainer, "logger": job.logger}
    if untrained is not None:
        sections |= {"data": untrained.data, "model": untrained.model, "pretrain": untrained.pretrain}
    if job.synthetic is not None:
        sections["data"] = job.synthetic
    top = {"stage": "sae", "gpt": job.gpt, "ckpt_path": job.ckpt_path, "force": job.force}
    return View(sections, top, d_in, d_in_from)


def pretrain_view(job) -> View:
    """A ``PretrainJob``'s values (its data section may be synthetic: a rule refuses that)."""
    sections = {"data": job.data, "model": job.model, "pretrain": job.pretrain, "trainer": job.trainer,
                "logger": job.logger}  # fmt: skip
    top = {"stage": "pretrain", "ckpt_path": job.ckpt_path, "force": job.force, "ready_made": job.ready_made}
    return View(sections, top)


def analyze_view(job) -> View:
    """An ``AnalyzeJob``'s values."""
    return View({"analysis": job.analysis, "source": job.source, "logger": job.logger}, {"out_dir": job.out_dir})


# ---- what the rules share ----


def _world(v: View) -> int:
    """Processes training one model: each takes its own sae.batch_size slice of every step."""
    return v["trainer.devices"] * v["trainer.num_nodes"]


def _steps(v: View) -> tuple[int, str]:
    """The SAE run's optimizer steps at most (sae.until=budget runs them all), and how they follow from the keys."""
    per_epoch = v["harvest.n_tokens"] // (v["sae.batch_size"] * _world(v))
    how = (
        f"harvest.n_tokens={v['harvest.n_tokens']} // (sae.batch_size={v['sae.batch_size']} x {_world(v)} "
        f"processes, trainer.devices x trainer.num_nodes) x sae.epochs={v['sae.epochs']}"
    )
    return per_epoch * v["sae.epochs"], how


def _slurm_started() -> bool:
    """True inside a SLURM job step that started one process per device (trainer.build_trainer spawns no more)."""
    try:
        return int(os.environ.get("SLURM_NTASKS", "1")) > 1
    except ValueError:
        return False


def _devices(accelerator: str) -> tuple[int, str]:
    """How many devices of ``accelerator`` torch can use here, and what they are called."""
    import torch  # noqa: PLC0415 - only when an accelerator is asked for

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = int(bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()))
    if accelerator == "cuda" or (accelerator == "gpu" and cuda):
        return cuda, "CUDA GPU"
    return mps, "GPU (CUDA or MPS)" if accelerator == "gpu" else "MPS device"


# ---- the rules, in the order they are checked: the data, the model and pretraining, the processes, the SAE ----


def _synthetic_no_pretrain(v: View) -> str | None:
    if v["stage"] == "pretrain" and v["data.corpus"] == SYNTHETIC:
        return (
            "stage=pretrain with data=synthetic (data.corpus=synthetic): there is no GPT to pretrain on synthetic "
            "data, whose activations are generated directly. Train SAEs on them with `python train.py "
            "data=synthetic` (one job) or `python train.py -m experiment=synthetic` (the sweep); drop stage=pretrain"
        )
    return None


def _synthetic_no_gpt(v: View) -> str | None:
    if v["gpt"] is not None and v["data.corpus"] == SYNTHETIC:
        return (
            f"gpt={v['gpt']}: data=synthetic generates the activations (data.corpus=synthetic), there is no GPT to "
            "use; drop gpt="
        )
    return None


def _text_files_paths(v: View) -> str | None:
    if v["data.corpus"] == "text_files" and not v["data.paths"]:
        return (
            "data=text_files (data.corpus=text_files) needs data.paths, a list of globs, e.g. "
            "data.paths='[\"/my/corpus/**/*.txt\"]'"
        )
    return None


def _bpe_vocab_size(v: View) -> str | None:
    size = v["data.vocab_size"]
    if v["data.tokenizer"] == "bpe" and not 260 <= size <= 65536:
        return (
            f"data.vocab_size must be in [260, 65536] with data.tokenizer=bpe (256 bytes + specials, uint16 ids), "
            f"got {size!r}"
        )
    return None


def _active_within_features(v: View) -> str | None:
    if v["data.active"] > v["data.n_features"]:
        return (
            f"data.active (expected active features per activation) must be in (0, data.n_features="
            f"{v['data.n_features']}], got {v['data.active']!r}: lower data.active or raise data.n_features"
        )
    return None


def _groups_within_features(v: View) -> str | None:
    parts = v["data.groups"] * v["data.children"]
    if parts > v["data.n_features"]:
        return (
            f"data.groups x data.children = {parts} parts, more than data.n_features={v['data.n_features']} true "
            "features: lower data.groups or raise data.n_features"
        )
    return None


def _heads_divide_width(v: View) -> str | None:
    if v["model.n_embd"] % v["model.n_head"]:
        return f"model.n_embd={v['model.n_embd']} must be divisible by model.n_head={v['model.n_head']}"
    return None


def _warmup_within_steps(v: View) -> str | None:
    if v["pretrain.warmup_steps"] >= v["pretrain.max_steps"]:
        return (
            f"pretrain.warmup_steps must be below pretrain.max_steps={v['pretrain.max_steps']}, got "
            f"{v['pretrain.warmup_steps']!r}: lower pretrain.warmup_steps or raise pretrain.max_steps"
        )
    return None


def _min_lr_within_lr(v: View) -> str | None:
    if v["pretrain.min_lr"] > v["pretrain.lr"]:
        return f"need pretrain.min_lr <= pretrain.lr, got {v['pretrain.min_lr']!r} and {v['pretrain.lr']!r}"
    return None


def _processes_started(v: View) -> str | None:
    """Several processes need a strategy that starts them from this one, unless SLURM started them."""
    devices, nodes, strategy = v["trainer.devices"], v["trainer.num_nodes"], v["trainer.strategy"]
    if devices * nodes == 1 or _slurm_started():
        return None
    if nodes > 1:
        return (
            f"trainer.num_nodes={nodes} (x trainer.devices={devices}): processes on other nodes are started by SLURM "
            f"(hydra/launcher=slurm), which did not start this one; with trainer.strategy={strategy} it would wait "
            "for them forever. Set trainer.num_nodes=1 or run the sweep with hydra/launcher=slurm"
        )
    if strategy not in SPAWNING:
        return (
            f"trainer.devices={devices} (x trainer.num_nodes={nodes}) with trainer.strategy={strategy} re-launches "
            "this script once per process (and with it a whole sweep): use trainer=ddp or "
            "trainer.strategy=ddp_spawn"
        )
    return None


def _accelerator_here(v: View) -> str | None:
    accelerator, devices = v["trainer.accelerator"], v["trainer.devices"]
    if accelerator not in ("gpu", "cuda", "mps"):
        return None
    have, what = _devices(accelerator)
    if have == 0:
        return (
            f"trainer.accelerator={accelerator}: this machine has no {what} torch can use for trainer.devices="
            f"{devices}; use trainer=cpu (or install a build of torch for your GPU)"
        )
    if devices > have:
        return f"trainer.devices={devices} {what}s asked (trainer.accelerator={accelerator}), this machine has {have}"
    return None


def _resample_untied(v: View) -> str | None:
    if v["sae.resample_every"] and v["sae.tied"]:
        return (
            "sae.resample_every > 0 needs untied weights: a tied encoder row is its unit decoder column, so it "
            "cannot take the resampling rule's 0.2 x live-row norm. Set sae.tied=false or sae.resample_every=0."
        )
    return None


def _resample_relu(v: View) -> str | None:
    if v["sae.resample_every"] and not v.section("sae").arch_resamples:
        return (
            f"sae.resample_every > 0 is the ReLU SAE's control; sae.arch={v['sae.arch']} has its own remedy for dead "
            "features (AuxK for topk and batchtopk). Set sae.resample_every=0 or sae.arch=relu."
        )
    return None


def _resample_one_process(v: View) -> str | None:
    if v["sae.resample_every"] > 0 and _world(v) > 1:
        return (
            f"sae.resample_every > 0 needs one process, but trainer.devices x trainer.num_nodes = {_world(v)}: use "
            "trainer=cpu or trainer=gpu, or set sae.resample_every=0"
        )
    return None


def _batch_fits_tokens(v: View) -> str | None:
    batch = v["sae.batch_size"] * _world(v)
    if v["harvest.n_tokens"] < batch:
        return (
            f"harvest.n_tokens={v['harvest.n_tokens']} is fewer than one step's batch of {batch} activations "
            f"(sae.batch_size={v['sae.batch_size']} x {_world(v)} processes): raise harvest.n_tokens or lower "
            "sae.batch_size (processes: trainer.devices x trainer.num_nodes)"
        )
    return None


def _log_within_steps(v: View) -> str | None:
    """No metric row in a run shorter than sae.log_every (and no held-out one before eval_every): no metrics.csv."""
    steps, how = _steps(v)
    if 0 < steps < v["sae.log_every"]:
        return (
            f"sae.log_every={v['sae.log_every']} is more than the run's {steps} steps ({how}): no training metric "
            "would be logged. Lower sae.log_every or lengthen the run"
        )
    return None


def _resample_within_half(v: View) -> str | None:
    """Resampling runs at multiples of sae.resample_every in the first half of the run only (SAEModule.one_step)."""
    steps, how = _steps(v)
    every = v["sae.resample_every"]
    if every > 0 and steps > 0 and 2 * every >= steps:
        return (
            f"sae.resample_every={every} never resamples: resampling runs in the first half of the run's {steps} "
            f"steps ({how}). Lower sae.resample_every below {max(1, (steps - 1) // 2)} or lengthen the run"
        )
    return None


def _eval_rows_within_val(v: View) -> str | None:
    if v["sae.eval_rows"] > v["harvest.n_val_tokens"]:
        return (
            f"sae.eval_rows={v['sae.eval_rows']} held-out rows per evaluation, but harvest.n_val_tokens="
            f"{v['harvest.n_val_tokens']} are held out: lower sae.eval_rows or raise harvest.n_val_tokens"
        )
    return None


def _k_below_dict_size(v: View) -> str | None:
    if "k" in v.section("sae").arch_params and v["sae.k"] >= v["sae.dict_size"]:
        return (
            f"sae.k={v['sae.k']} codes per input of sae.dict_size={v['sae.dict_size']} features leave nothing "
            f"sparse (sae.arch={v['sae.arch']}): choose sae.k below sae.dict_size"
        )
    return None


def _layer_in_untrained_gpt(v: View) -> str | None:
    if v["gpt"] == "untrained" and v["harvest.layer"] >= v["model.n_layer"]:
        return (
            f"harvest.layer={v['harvest.layer']} is outside the untrained GPT (gpt=untrained): model.n_layer="
            f"{v['model.n_layer']} gives layers 0..{v['model.n_layer'] - 1}"
        )
    return None


def _sae_fits_memory(v: View) -> str | None:
    """A floor of the SAE's peak (memory.sae_peak_bytes) against what the machine has (nothing refused where that
    cannot be read); without the activation width (a GPT not loaded yet) the floor counts no d_in-sized tensor."""
    sae, accelerator = v.section("sae"), v["trainer.accelerator"]
    found = memory.available_bytes(accelerator)
    if found is None:
        return None
    one = memory.sae_peak_bytes(
        v.d_in or 0, sae.dict_size, sae.batch_size, tied=sae.tied, decoder_bias=sae.decoder_bias,
        activation_bytes=memory.HALF if sae.precision.endswith("-mixed") else memory.FP32,
    )  # fmt: skip
    processes = v["trainer.devices"] if found.shared else 1  # a node's CPU processes share its RAM; a GPU: its own
    need = one * processes
    if need <= found.bytes:
        return None
    width = f"d_in={v.d_in} from {v.d_in_from}" if v.d_in else "before the activation width is known"
    return (
        f"sae.dict_size={sae.dict_size} at sae.batch_size={sae.batch_size} needs at least {memory.gib(need)} "
        f"to train ({width}; parameters, gradients and Adam's moments, and the (batch, dict_size) codes with their "
        f"gradient{f', x {processes} processes' if processes > 1 else ''}), but this machine has "
        f"{memory.gib(found.bytes)} {found.where}: lower sae.dict_size or sae.batch_size"
    )


def _hook_is_foreign(v: View) -> str | None:
    if v["source.hook"] is not None and v["source.kind"] != "foreign":
        return (
            f"source.hook picks among other libraries' SAEs (source=foreign), not source.kind={v['source.kind']}: "
            "drop source.hook"
        )
    return None


def _foreign_needs_path(v: View) -> str | None:
    if v["source.kind"] == "foreign" and not v["source.path"]:
        return "source=foreign (source.kind=foreign) reads the SAEs in source.path: give it (source.path=/path/to/saes)"
    return None


def _wandb_reads_no_path(v: View) -> str | None:
    if v["source.kind"] == "wandb" and v["source.path"]:
        return (
            f"source.path={v['source.path']} is not read with source.kind=wandb (the dictionaries come from W&B): "
            "drop source.path, or analyse that folder with source=local"
        )
    return None


def _entity_is_wandb(v: View) -> str | None:
    if v["source.entity"] is not None and v["source.kind"] != "wandb":
        return (
            f"source.entity={v['source.entity']} names a W&B team, but source.kind={v['source.kind']} reads no W&B "
            "project: drop source.entity, or use source=wandb"
        )
    return None


R = Rule
RULES: tuple[Rule, ...] = (
    R("synthetic_no_pretrain", ("stage", "data.corpus"), _synthetic_no_pretrain,
      breaks=("stage=pretrain", "data=synthetic"), keeps=("data=synthetic",)),
    R("synthetic_no_gpt", ("data.corpus", "gpt"), _synthetic_no_gpt,
      breaks=("data=synthetic", "gpt=untrained"), keeps=("data=synthetic",)),
    R("text_files_paths", ("data.corpus", "data.paths"), _text_files_paths, at="section",
      breaks=("stage=pretrain", "data=text_files", "data.paths=[]"),
      keeps=("stage=pretrain", "data=text_files", "data.paths=[a.txt]")),
    R("bpe_vocab_size", ("data.tokenizer", "data.vocab_size"), _bpe_vocab_size, at="section",
      breaks=("stage=pretrain", "data.vocab_size=100"), keeps=("stage=pretrain", "data.vocab_size=100",
                                                                "data.tokenizer=gpt2")),
    R("active_within_features", ("data.active", "data.n_features"), _active_within_features, at="section",
      breaks=("data=synthetic", "data.n_features=4"), keeps=("data=synthetic",)),
    R("groups_within_features", ("data.groups", "data.children", "data.n_features"), _groups_within_features,
      at="section", breaks=("data=synthetic", "data.groups=300"), keeps=("data=synthetic",)),
    R("heads_divide_width", ("model.n_embd", "model.n_head"), _heads_divide_width, at="section",
      breaks=("stage=pretrain", "model.n_head=5"), keeps=("stage=pretrain",)),
    R("warmup_within_steps", ("pretrain.warmup_steps", "pretrain.max_steps"), _warmup_within_steps, at="section",
      breaks=("stage=pretrain", "pretrain.max_steps=50"), keeps=("stage=pretrain",)),
    R("min_lr_within_lr", ("pretrain.min_lr", "pretrain.lr"), _min_lr_within_lr, at="section",
      breaks=("stage=pretrain", "pretrain.lr=1e-4"), keeps=("stage=pretrain",)),
    R("processes_started", ("trainer.devices", "trainer.num_nodes", "trainer.strategy"), _processes_started,
      machine=True, breaks=("trainer.devices=2",), keeps=("trainer.devices=2", "trainer.strategy=ddp_spawn")),
    R("accelerator_here", ("trainer.accelerator", "trainer.devices"), _accelerator_here, machine=True,
      breaks=("trainer=ddp", "trainer.devices=64")),
    R("resample_untied", ("sae.resample_every", "sae.tied"), _resample_untied, at="section",
      breaks=("sae.resample_every=250", "sae.tied=true"), keeps=("sae.resample_every=250",)),
    R("resample_relu", ("sae.resample_every", "sae.arch"), _resample_relu, at="section",
      breaks=("sae.resample_every=250", "sae.arch=topk"), keeps=("sae.resample_every=250",)),
    R("resample_one_process", ("sae.resample_every", "trainer.devices", "trainer.num_nodes"), _resample_one_process,
      breaks=("sae.resample_every=250", "trainer=ddp", "trainer.accelerator=cpu"),
      keeps=("trainer=ddp", "trainer.accelerator=cpu")),
    R("batch_fits_tokens", ("harvest.n_tokens", "sae.batch_size", "trainer.devices", "trainer.num_nodes"),
      _batch_fits_tokens, breaks=("harvest.n_tokens=100",), keeps=()),
    R("log_within_steps", (*STEP_KEYS, "sae.log_every"), _log_within_steps,
      breaks=("harvest.n_tokens=25600", "sae.log_every=1000"), keeps=("harvest.n_tokens=25600",)),
    R("resample_within_half", (*STEP_KEYS, "sae.resample_every"), _resample_within_half,
      breaks=("sae.resample_every=250", "harvest.n_tokens=25600"), keeps=("sae.resample_every=250",)),
    R("eval_rows_within_val", ("sae.eval_rows", "harvest.n_val_tokens"), _eval_rows_within_val,
      breaks=("harvest.n_val_tokens=1000",), keeps=("harvest.n_val_tokens=1000", "sae.eval_rows=1000")),
    R("k_below_dict_size", ("sae.k", "sae.dict_size", "sae.arch"), _k_below_dict_size,
      breaks=("sae.arch=topk", "sae.dict_size=16"), keeps=("sae.arch=topk", "sae.dict_size=16", "sae.k=4")),
    R("layer_in_untrained_gpt", ("harvest.layer", "model.n_layer"), _layer_in_untrained_gpt, reads=("gpt",),
      breaks=("gpt=untrained", "harvest.layer=6"), keeps=("gpt=untrained",)),
    R("sae_fits_memory", ("sae.dict_size", "sae.batch_size"), _sae_fits_memory, machine=True,
      reads=("trainer.accelerator", "trainer.devices"), breaks=("sae.dict_size=1000000000",)),
    R("hook_is_foreign", ("source.hook", "source.kind"), _hook_is_foreign, config="analyze", at="section",
      breaks=("source.hook=blocks.2.hook_mlp_out",), keeps=()),
    R("foreign_needs_path", ("source.kind", "source.path"), _foreign_needs_path, config="analyze", at="section",
      breaks=("source=foreign",), keeps=("source=foreign", "source.path=/saes")),
    R("wandb_reads_no_path", ("source.kind", "source.path"), _wandb_reads_no_path, config="analyze", at="section",
      breaks=("source=wandb", "source.path=/saes"), keeps=("source=wandb",)),
    R("entity_is_wandb", ("source.kind", "source.entity"), _entity_is_wandb, config="analyze", at="section",
      breaks=("source.entity=my-team",), keeps=()),
)  # fmt: skip
