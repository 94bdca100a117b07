"""The real conf/ composed with Hydra, and its conversion to checked dataclasses."""

import dataclasses

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException

from sae_sweep import ConfigError, config
from sae_sweep.analysis.collect import SourceConfig
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.tracking import LoggerConfig
from sae_sweep.train.corpus import DataConfig
from sae_sweep.train.gpt import GPTConfig
from sae_sweep.train.gpt_module import PretrainConfig
from sae_sweep.train.harvest import HarvestConfig
from sae_sweep.train.sae import SAEConfig
from sae_sweep.train.trainer import TrainerConfig
from sae_sweep.truth import SyntheticConfig

from .conftest import CONF, compose

GROUPS = ["data", "model", "pretrain", "harvest", "sae", "trainer", "logger", "paths", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda x: str(x))
def test_every_group_option_composes_and_converts(group, option):
    overrides = [f"{group}={option}"]
    if option == "text_files":
        overrides.append("data.paths=[corpus/*.txt]")
    cfg = compose(overrides)
    if cfg.data.corpus == "synthetic":  # generated activations: nothing to pretrain (tested in test_synthetic too)
        with pytest.raises(ConfigError, match="no GPT to pretrain on synthetic data"):
            config.pretrain_job(cfg)
    else:
        job = config.pretrain_job(cfg)
        assert job.model.n_embd == cfg.model.n_embd and job.trainer.devices == cfg.trainer.devices
    sae_job = config.sae_job(cfg)
    assert sae_job.sae.dict_size == cfg.sae.dict_size and sae_job.harvest.layer == cfg.harvest.layer


def test_defaults_are_the_notes_model():
    job = config.pretrain_job(compose([]))
    m = job.model
    assert (m.n_layer, m.n_embd, m.n_head, m.d_mlp, m.block_size, m.bias, m.dropout) == (6, 32, 4, 128, 256, False, 0.0)
    assert job.data == DataConfig()  # embedded corpus, byte-level BPE
    assert job.pretrain == PretrainConfig() and (job.pretrain.lr, job.pretrain.beta2) == (2e-3, 0.95)
    assert job.logger.kind == "wandb" and job.logger.mode == "offline"
    assert job.trainer.accelerator == "cpu" and job.ckpt_path == "last"


def test_smoke_experiment_is_tiny():
    job = config.pretrain_job(compose(["experiment=smoke"]))
    assert job.pretrain.max_steps <= 50 and job.data.max_bytes <= 1_000_000 and job.model.block_size <= 64


def test_unknown_key_on_the_command_line_fails_at_compose():
    with pytest.raises(ConfigCompositionException, match="pretrain.lrr"):
        compose(["pretrain.lrr=1"])


def test_unknown_key_added_with_plus_fails_at_conversion():
    with pytest.raises(ConfigError, match=r"pretrain: unknown key\(s\) \['lrr'\]; allowed keys: \['seed'"):
        config.pretrain_job(compose(["+pretrain.lrr=1"]))


@pytest.mark.parametrize(
    "override, needle",
    [
        ("pretrain.lr=fast", "pretrain.lr must be a number, got 'fast'"),
        ("pretrain.max_steps=1.5", "pretrain.max_steps must be an integer, got 1.5"),
        ("pretrain.batch_size=0", "pretrain.batch_size must be a positive integer"),
        ("model.n_head=5", "divisible"),
        ("trainer.strategy=fsdp2", "trainer.strategy must be one of"),
        ("logger.mode=sometimes", "logger.mode must be one of"),
        ("stage=finetune", "stage must be one of"),
        ("force=maybe", "force must be true or false"),
        ("data.paths=3", "data.paths must be a list"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        cfg = compose([override])
        config.stage(cfg)
        config.pretrain_job(cfg)


def test_missing_text_files_paths_is_named():
    with pytest.raises(ConfigError, match="data.paths"):
        config.pretrain_job(compose(["data=text_files"]))


def test_sae_defaults_are_the_replications():
    cfg = compose([])
    assert config.stage(cfg) == "sae"
    job = config.sae_job(cfg)
    assert (job.sae.l1_coeff, job.sae.lr, job.sae.batch_size, job.sae.init) == (1e-3, 1e-3, 256, "linear")
    assert (job.sae.until, job.sae.epochs) == ("converged", 4)  # a cap, not a budget
    assert (job.sae.tied, job.sae.decoder_bias, job.harvest.layer, job.gpt) == (False, False, 2, None)
    assert job.name == "sae-L2-J1024-s0"


def test_bimodal_and_demo_experiments_sweep_the_notes_sizes():
    sizes = "256,512,1024,2048,4096,8192"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        bimodal = hydra_compose("train", overrides=["experiment=bimodal"], return_hydra_config=True)
        demo = hydra_compose("train", overrides=["experiment=demo"], return_hydra_config=True)
    assert dict(bimodal.hydra.sweeper.params) == {"sae.dict_size": sizes, "sae.seed": "0,1"}
    assert dict(demo.hydra.sweeper.params) == {"sae.dict_size": sizes, "sae.seed": "0,1"}
    assert bimodal.sae.l1_coeff == 1e-3 and bimodal.harvest.layer == 2
    # the demo trains until the rule is met, two jobs at a time
    assert (demo.sae.until, demo.hydra.launcher.n_jobs) == ("converged", 2) and "Joblib" in demo.hydra.launcher._target_


def test_synthetic_experiment_straddles_the_true_count():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["experiment=synthetic"], return_hydra_config=True)
    job = config.sae_job(cfg)
    assert job.synthetic is not None and job.synthetic.n_features == 512 and job.synthetic.d_in == 128
    sizes = [int(s) for s in cfg.hydra.sweeper.params["sae.dict_size"].split(",")]
    assert min(sizes) < job.synthetic.n_features in sizes and max(sizes) >= 4 * job.synthetic.n_features
    assert job.harvest.n_tokens == 1_000_000 and job.gpt is None and job.variant == "synthetic-l1-0.005"


# Every dataclass field has a key in its YAML node, so every documented override works (Hydra refuses a key that is
# not in the node). One exception, derived rather than set: the GPT's vocab_size comes from the tokenizer
# (data.vocab_size), so model.vocab_size is not a knob.
DERIVED = {("model", "vocab_size")}


TRAIN_NODES = {  # group -> its dataclass, per option
    "data": lambda option: SyntheticConfig if option == "synthetic" else DataConfig,
    "model": lambda option: GPTConfig,
    "pretrain": lambda option: PretrainConfig,
    "harvest": lambda option: HarvestConfig,
    "sae": lambda option: SAEConfig,
    "trainer": lambda option: TrainerConfig,
    "logger": lambda option: LoggerConfig,
}
ANALYZE_NODES = {"source": lambda option: SourceConfig, "logger": lambda option: LoggerConfig}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _compose(config_name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def _group_cases():
    cases = [("train", g, o, f) for g, f in TRAIN_NODES.items() for o in options(g)]
    return cases + [("analyze", g, o, f) for g, f in ANALYZE_NODES.items() for o in options(g)]


@pytest.mark.parametrize("config_name, group, option, cls_of", _group_cases(), ids=lambda x: str(x)[:20])
def test_every_dataclass_field_is_a_key_of_its_yaml_node(config_name, group, option, cls_of):
    overrides = [f"{group}={option}"] + (["data.paths=[x.txt]"] if option == "text_files" else [])
    node = _compose(config_name, overrides)[group]
    want = _fields(cls_of(option)) - {k for g, k in DERIVED if g == group}
    assert set(node) == want, f"{group}={option}: missing {sorted(want - set(node))}, extra {sorted(set(node) - want)}"


def test_every_analysis_field_is_in_analyze_yaml_and_overrides_work():
    cfg = _compose("analyze", ["analysis.n_boot=100", "analysis.controls=false", "analysis.variant=untrained"])
    assert set(cfg.analysis) == _fields(AnalysisConfig)
    job = config.analyze_job(cfg)
    assert (job.analysis.n_boot, job.analysis.controls, job.analysis.variant) == (100, False, "untrained")
    assert job.analysis == AnalysisConfig(n_boot=100, controls=False, variant="untrained")  # the rest: defaults


def test_the_sae_trains_in_fp32_under_the_gpu_preset_unless_asked():
    """trainer=gpu's bf16-mixed is for pretraining; the SAE step is the replication's fp32 (sae.precision)."""
    from sae_sweep.train.sae_stage import sae_trainer_config  # noqa: PLC0415

    gpu = compose(["trainer=gpu"])
    assert config.pretrain_job(gpu).trainer.precision == "bf16-mixed"
    job = config.sae_job(gpu)
    assert sae_trainer_config(job).precision == "32-true" and sae_trainer_config(job).accelerator == "gpu"
    assert sae_trainer_config(config.sae_job(compose(["trainer=gpu", "sae.precision=bf16-mixed"]))).precision == (
        "bf16-mixed"
    )
    with pytest.raises(ConfigError, match="sae.precision must be one of"):
        config.sae_job(compose(["sae.precision=fp64"]))


def test_a_sweeps_jobs_are_listed_as_the_sweeper_runs_them():
    """A key given on the command line replaces the experiment's sweep of it (Hydra's BasicSweeper keys overrides by
    name): ``experiment=demo sae.dict_size=256`` is one size per seed, not the demo's sizes again; a value listed
    twice is two identical jobs (which the sweep check refuses)."""
    from omegaconf import OmegaConf  # noqa: PLC0415

    from sae_sweep.sweep_check import job_overrides  # noqa: PLC0415

    def jobs(params: dict, task: list[str]):
        return job_overrides(OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}}))

    demo = {"sae.dict_size": "256,512,1024", "sae.seed": "0,1"}
    assert jobs(demo, ["sae.dict_size=256"]) == [
        ("sae.dict_size=256", "sae.seed=0"),
        ("sae.dict_size=256", "sae.seed=1"),
    ]
    assert len(jobs(demo, [])) == 6
    assert jobs({}, ["sae.dict_size=24", "sae.seed=0,0"]) == [("sae.dict_size=24", "sae.seed=0")] * 2
