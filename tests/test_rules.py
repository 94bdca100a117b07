"""The rules between config keys (sae_sweep/rules.py), tested from their own list: each rule's example breaks it, and
only it, with one line naming every key it relates; changing one key (mostly back to its default) satisfies it; and
no check outside the list relates two keys (with the list switched off, values that each pass alone pass together:
every pair within a section, and across a whole job every key at one end of its range with all others at the other).
Then the SAE stage's memory estimate, exactly on a hand-computed case, and its refusal before any file is written."""

import dataclasses
import itertools
from functools import cache

import pytest
from omegaconf import OmegaConf

from sae_sweep import ConfigError, config, memory, rules
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

from .checks import check, check_entry, compose_config
from .conftest import CONF

RULES = {r.name: r for r in rules.RULES}


@cache
def composed(name: str, overrides: tuple):
    """One composed config per set of overrides, shared by the tests (none keeps a change to it: each sets its keys
    back), since composing is most of their time."""
    return compose_config(name, overrides)


def key_of(override: str) -> str:
    return override.split("=", 1)[0]


@pytest.fixture
def no_rules(monkeypatch):
    """The registry switched off: every rule passes, wherever it is checked from."""
    monkeypatch.setattr(rules, "enforce", lambda *args, **kwargs: None)


def test_every_rule_relates_keys_and_has_an_example():
    assert len(RULES) == len(rules.RULES)  # unique names
    for rule in rules.RULES:
        assert len(rule.keys) >= 2 and len(set(rule.keys)) == len(rule.keys), rule.name
        assert rule.breaks, f"{rule.name} has no example that breaks it"
        assert rule.config in ("train", "analyze") and rule.at in ("section", "job"), rule.name
        assert rule.at == "job" or not rule.machine, f"{rule.name}: a machine rule is not checked per section"


@pytest.mark.parametrize("rule", rules.RULES, ids=lambda r: r.name)
def test_each_rules_example_breaks_it_in_one_line_naming_its_keys(rule):
    with pytest.raises(ConfigError) as caught:
        check_entry(rule.config, composed(rule.config, rule.breaks))
    message = str(caught.value)
    assert getattr(caught.value, "rule", None) == rule.name, message  # this rule, not another check
    assert "\n" not in message.strip()
    assert [k for k in rule.keys if k not in message] == [], message


SECTION_CLASSES = {"model": GPTConfig, "pretrain": PretrainConfig, "sae": SAEConfig, "source": SourceConfig}


@pytest.mark.parametrize("rule", [r for r in rules.RULES if r.at == "section"], ids=lambda r: r.name)
def test_each_section_rule_refuses_its_dataclass_too(rule):
    """A section's rules are checked when its dataclass is made, so a library call that builds one is refused too."""
    (section,) = {k.split(".")[0] for k in rule.keys}
    node = composed(rule.config, rule.breaks)[section]
    cls = SECTION_CLASSES.get(section) or (SyntheticConfig if node.corpus == "synthetic" else DataConfig)
    with pytest.raises(ConfigError) as caught:
        config.build(cls, node, section)
    assert getattr(caught.value, "rule", None) == rule.name, str(caught.value)


@pytest.mark.parametrize("rule", [r for r in rules.RULES if r.keeps is not None], ids=lambda r: r.name)
def test_changing_one_key_of_the_example_satisfies_each_rule(rule):
    differ = {key_of(o) for o in set(rule.breaks) ^ set(rule.keeps)}
    assert len(differ) == 1, f"{rule.name}: keeps should change one key of breaks, changes {differ}"
    check_entry(rule.config, composed(rule.config, rule.keeps))


@pytest.mark.parametrize("rule", rules.RULES, ids=lambda r: r.name)
def test_no_check_outside_the_registry_refuses_a_rules_example(rule, no_rules):
    """With the registry off, each rule's example passes every check: what it breaks is checked by that rule alone,
    not again somewhere else (a move that left the old check behind fails here)."""
    check_entry(rule.config, composed(rule.config, rule.breaks))


# ---- No cross-key check outside the registry: every pair of values that each pass alone passes together ----

SECTIONS = {  # (config, base overrides, section) -> its dataclass
    ("train", (), "data"): DataConfig,
    ("train", ("data=synthetic",), "data"): SyntheticConfig,
    ("train", (), "model"): GPTConfig,
    ("train", (), "pretrain"): PretrainConfig,
    ("train", (), "harvest"): HarvestConfig,
    ("train", (), "sae"): SAEConfig,
    ("train", (), "trainer"): TrainerConfig,
    ("train", (), "logger"): LoggerConfig,
    ("analyze", (), "analysis"): AnalysisConfig,
    ("analyze", (), "source"): SourceConfig,
}


def conf_values() -> dict[str, set]:
    """Every value each dotted key takes anywhere under conf/ (group options, experiments and their sweeps)."""
    seen: dict[str, set] = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif not isinstance(v, list):
                seen.setdefault(f"{prefix}{k}", set()).add(v)

    for path in CONF.glob("*/*.yaml"):
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
        glob = "@package _global_" in path.read_text()
        walk({k: v for k, v in node.items() if k not in ("defaults", "hydra")}, "" if glob else f"{path.parent.name}.")
        for key, values in ((node.get("hydra") or {}).get("sweeper") or {}).get("params", {}).items():
            seen.setdefault(key, set()).update(OmegaConf.create(f"v: [{values}]").v)  # a sweep: "256,512"
    return seen


CONF_VALUES = conf_values()


def candidates(key: str, default) -> list:
    """Values to try at ``key``: its default, what conf/ sets it to, and numbers around them; in ``_order``."""
    if isinstance(default, list):
        return []  # data.paths, logger.tags: a list of strings, each checked alone
    values = {default, *CONF_VALUES.get(key, ())}
    if isinstance(default, bool):
        values |= {True, False}
    elif isinstance(default, int):
        values |= {0, 1, default // 2, 2 * default, 4 * default, 10 * default}
    elif isinstance(default, float):
        values |= {0.0, default / 2, 2 * default, 10 * default, 1.0}
    elif default is None:
        values |= {1, 64, 0.5, "x"}
    elif isinstance(default, str):
        values |= {"", "x"}
    return sorted(values, key=_order)


def _order(v) -> tuple:
    """Numbers first, in order (the ends of a range are the first and the last), then the rest by repr."""
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, repr(v))


def section_menu(name: str, base: tuple, section: str, cls) -> tuple[dict, dict[str, list]]:
    """The section's values as composed, and for each of its keys up to four of the candidates that pass alone (the
    ends and two between, in ``candidates``' order)."""
    values = OmegaConf.to_container(composed(name, base)[section], resolve=True)
    menu = {}
    for key, default in values.items():
        ok = []
        for v in candidates(f"{section}.{key}", default):
            try:
                config.build(cls, {**values, key: v}, section)
            except ConfigError:
                continue
            ok.append(v)
        menu[key] = [ok[i] for i in sorted({0, len(ok) // 3, 2 * len(ok) // 3, len(ok) - 1})] if ok else []
    return values, menu


@pytest.mark.parametrize("where", list(SECTIONS), ids=lambda w: f"{w[0]}:{'+'.join(w[1]) or w[2]}:{w[2]}")
def test_within_a_section_only_the_registry_relates_two_keys(where, no_rules):
    """Every pair of keys of the section, every pair of values that each pass alone: built together with the
    registry off, no check refuses them (a cross-key check left in a ``__post_init__`` would)."""
    name, base, section = where
    cls = SECTIONS[where]
    values, menu = section_menu(name, base, section, cls)
    refused = []
    for (a, va), (b, vb) in itertools.combinations([(k, v) for k, vs in menu.items() for v in vs], 2):
        if a == b:
            continue
        try:
            config.build(cls, {**values, a: va, b: vb}, section)
        except ConfigError as exc:
            refused.append(f"{section}.{a}={va!r} with {section}.{b}={vb!r}: {exc}")
    assert not refused, f"{len(refused)} pairs refused outside the registry, e.g.\n" + "\n".join(refused[:10])


def job_menu(name: str, base: tuple) -> dict[str, list]:
    """For every leaf key of the composed config, the candidate values that pass every check alone (the machine's
    included: an option this machine cannot run is left out), in ``_order``."""
    cfg = composed(name, base)
    raw = OmegaConf.to_container(cfg, resolve=False)
    menu = {}
    for key, default in _leaves(OmegaConf.to_container(cfg, resolve=True)):
        if key.startswith("paths."):
            continue
        menu[key] = [v for v in candidates(key, default) if _passes(name, cfg, raw, {key: v})]
    return menu


def _leaves(node: dict, prefix: str = ""):
    for k, v in node.items():
        yield from _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]


def _passes(name: str, cfg, raw: dict, changes: dict, machine: bool = True) -> bool:
    """Whether ``cfg`` with ``changes`` set passes every check; ``cfg`` is set back afterwards."""
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, merge=False)
    try:
        check(name, cfg, machine)
        return True
    except ConfigError:
        return False
    finally:
        for key in changes:
            node = raw
            for part in key.split("."):
                node = node[part]
            OmegaConf.update(cfg, key, node, merge=False)


@pytest.mark.parametrize("base", [("train", ()), ("train", ("data=synthetic",)), ("analyze", ())], ids=str)
def test_across_the_job_only_the_registry_relates_keys(base, no_rules):
    """Every key at the lowest value that passes alone and every other at the highest, and the other way round (and
    all lowest, all highest): with the registry off, each whole job passes. Each pair of keys thus meets at both
    ends of its range at once, in 2n + 2 checks, so an inequality between two keys checked outside the registry (in
    a job builder, a stage's check) is refused here."""
    name, _ = base
    cfg = composed(*base)
    raw = OmegaConf.to_container(cfg, resolve=False)
    menu = {k: vs for k, vs in job_menu(*base).items() if len(vs) > 1}
    low, high = {k: vs[0] for k, vs in menu.items()}, {k: vs[-1] for k, vs in menu.items()}
    tries = [low, high] + [{**low, k: high[k]} for k in menu] + [{**high, k: low[k]} for k in menu]
    refused = [i for i, values in enumerate(tries) if not _passes(name, cfg, raw, values, machine=False)]
    assert not refused, [("all low", "all high", *(f"{k} high" for k in menu), *(f"{k} low" for k in menu))[i]
                         for i in refused]  # fmt: skip


# ---- The SAE stage's memory ----


def test_the_memory_estimate_on_a_hand_computed_case():
    # d_in 3, J 5, batch 2. Parameters: decoder 15 + encoder 15 + encoder bias 5 = 35, each held 4 times (value,
    # gradient, Adam's two moments) in fp32: 35 x 4 x 4 = 560 bytes. Codes and their gradient: 2 x 2 x 5 x 4 = 80.
    assert memory.sae_peak_bytes(3, 5, 2) == 640
    assert memory.sae_peak_bytes(3, 5, 2, tied=True) == (15 + 5) * 16 + 80  # no encoder of its own
    assert memory.sae_peak_bytes(3, 5, 2, decoder_bias=True) == (35 + 3) * 16 + 80
    assert memory.sae_peak_bytes(3, 5, 2, activation_bytes=memory.HALF) == 560 + 40  # bf16 codes under autocast
    assert memory.gib(3 * 2**30) == "3.0 GiB" and memory.gib(1234 * 2**30) == "1,234 GiB"


def test_the_memory_this_machine_has_is_read():
    found = memory.available_bytes("cpu")
    assert found is not None and found.bytes > 0 and found.where == "of RAM available" and found.shared


def test_an_sae_too_large_for_the_machine_is_refused_with_the_estimate_and_the_width(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda accelerator: memory.Available(10**9, "of RAM", True))
    cfg = compose_config("train", ["data=synthetic", "sae.dict_size=200000"])
    need = memory.sae_peak_bytes(128, 200000, 256)  # data.d_in = 128, known from the config: 1.23 GB
    with pytest.raises(ConfigError, match=r"sae.dict_size=200000 at sae.batch_size=256 needs at least") as caught:
        check("train", cfg)
    message = str(caught.value)
    assert memory.gib(need) in message and "d_in=128 from data.d_in" in message and "0.9 GiB of RAM" in message
    check("train", compose_config("train", ["data=synthetic", "sae.dict_size=100000"]))  # 0.61 GB: fits in 1 GB
    with pytest.raises(ConfigError, match="x 2 processes"):  # two CPU processes share the RAM: 1.23 GB
        check("train", compose_config("train", ["data=synthetic", "sae.dict_size=100000", "trainer=ddp",
                                                 "trainer.accelerator=cpu"]))  # fmt: skip


def test_a_too_large_sae_is_refused_before_any_file_is_written(tmp_path):
    import train  # noqa: PLC0415 - the entry point's own run(), in-process

    cfg = compose_config("train", ["data=synthetic", "sae.dict_size=1000000000", f"paths.root={tmp_path / 'out'}"])
    with pytest.raises(ConfigError, match="sae.dict_size=1000000000"):
        train.run(cfg)
    assert list(tmp_path.iterdir()) == []  # not even the store's folder


def test_processes_started_by_slurm_need_no_spawning_strategy(monkeypatch):
    cfg = compose_config("train", ["trainer.devices=2"])
    with pytest.raises(ConfigError, match="re-launches this script"):
        check("train", cfg)
    monkeypatch.setenv("SLURM_NTASKS", "2")  # a SLURM job step started both processes
    check("train", cfg)


def test_a_view_reads_fields_not_properties():
    view = rules.View({"sae": SAEConfig()}, {"gpt": None})
    assert "sae.k" in view and "sae.arch_suffix" not in view and "gpt" in view and "stage" not in view
    assert view["sae.dict_size"] == 1024 and dataclasses.is_dataclass(view.section("sae"))
