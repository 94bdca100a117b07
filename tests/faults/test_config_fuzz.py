"""Bad configuration, fuzzed: any value for any key either converts or fails with a ConfigError naming the key.

Two fuzzers. The hypothesis tests send random values through Hydra's own override parser and composition. The
per-key fuzz sets every leaf key of every option of every group of train.yaml and analyze.yaml (and of each SAE
architecture, and their top-level keys) in turn to each of ``BAD`` (wrong types, out-of-range numbers, NaN and
infinities, an unresolvable interpolation, a missing value) on that option's composed config, in-process, and runs
what the entry point checks before any work (tests/checks.py); its key list is read from conf/, so a new key is
fuzzed without a new test, and ``test_the_per_key_fuzz_covers_every_key_of_every_group_option`` fails if one is not.
"""

import math
from functools import cache
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from sae_sweep import ConfigError, config
from sae_sweep.train.archs import ARCHITECTURES

from ..checks import CONFIGS, check, compose_config
from ..conftest import CONF, compose

pytestmark = pytest.mark.faults

# Every leaf key of the composed train config, as "section.key", except the free-form paths.root.
BASE = compose([])
KEYS = sorted(
    f"{section}.{key}"
    for section in ("data", "model", "pretrain", "harvest", "sae", "trainer", "logger")
    for key in BASE[section]
)
VALUES = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.booleans(),
    st.text(alphabet="abcxyz_-", min_size=0, max_size=6),
    st.none(),
)


def as_override(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


# Random values through Hydra's parser; every key's fixed bad values are tried below (test_every_key_of_...), so a
# sample suffices here
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_value_converts_or_names_the_key(key, value):
    try:
        cfg = compose([f"{key}={as_override(value)}"])
    except ConfigCompositionException:
        return  # Hydra refused the override before anything ran, and its message names the key
    try:
        config.pretrain_job(cfg)
        config.sae_job(cfg)
    except ConfigError as exc:
        assert key in str(exc) or key.split(".", 1)[1] in str(exc), (key, value, str(exc))
        assert "\n" not in str(exc).strip()


SYNTHETIC_KEYS = sorted(f"data.{key}" for key in compose(["data=synthetic"])["data"] if key != "corpus")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(SYNTHETIC_KEYS), value=VALUES)
def test_any_synthetic_data_value_converts_or_names_the_key(key, value):
    try:
        cfg = compose(["data=synthetic", f"{key}={as_override(value)}"])
    except ConfigCompositionException:
        return
    try:
        config.sae_job(cfg)
    except ConfigError as exc:
        assert key in str(exc), (key, value, str(exc))
        assert "\n" not in str(exc).strip()


# ---- The per-key fuzz: every leaf key of every group option, each set to every value of BAD, in-process ----

BAD = (None, True, "abc", "", [1, 2], {"a": 1}, -1, 0, 0.5, 2**63, math.nan, math.inf, -math.inf, "${nope}",
       "???")  # fmt: skip
NOT_OURS = {"hydra"}  # Hydra's own groups (hydra/launcher=...): not the jobs' config
NEEDS = {("data", "text_files"): ("data.paths=[a.txt]",), ("source", "foreign"): ("source.path=/saes",)}  # valid


def leaves(node: dict, prefix: str = "") -> list[str]:
    """Dotted keys of every leaf of a nested dict (a list is a leaf)."""
    out = []
    for k, v in node.items():
        out += leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return out


def groups_of(name: str) -> list[str]:
    """The groups conf/<name>.yaml's defaults list picks from."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))["defaults"]
    return [next(iter(d)) for d in defaults if isinstance(d, dict) and next(iter(d)) not in NOT_OURS]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def file_keys(path: Path, prefix: str) -> list[str]:
    """The leaf keys a yaml file sets: under ``prefix``, or as written for a ``@package _global_`` file."""
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    node = {k: v for k, v in node.items() if k not in ("defaults", "hydra")}
    return leaves(node, "" if "@package _global_" in path.read_text() else prefix)


@cache
def composed_leaves(name: str, base: tuple[str, ...], section: str) -> list[str]:
    cfg = OmegaConf.to_container(compose_config(name, base), resolve=False)
    return leaves(cfg[section], f"{section}.")


def fuzz_cases() -> list[tuple[str, tuple[str, ...], tuple[str, ...], str]]:
    """(config, base overrides, keys to fuzz on that base, id): each config's own keys on its defaults, then each
    option of each group with the keys of its node as composed (a global option: the keys its file sets), then each
    SAE architecture with the sae.* keys it reads."""
    cases = []
    for name in CONFIGS:
        cases.append((name, (), tuple(file_keys(CONF / f"{name}.yaml", "")), name))
        for group in groups_of(name):
            for option in options(group):
                base = (f"{group}={option}", *NEEDS.get((group, option), ()))
                path = CONF / group / f"{option}.yaml"
                glob = "@package _global_" in path.read_text()
                keys = file_keys(path, "") if glob else composed_leaves(name, base, group)
                cases.append((name, base, tuple(keys), f"{name}:{group}={option}"))
    for arch, cls in ARCHITECTURES.items():  # sae.arch's choices: each with the keys it reads (relu: sae=default)
        if arch != "relu":
            cases.append(("train", (f"sae.arch={arch}",), ("sae.arch", *(f"sae.{k}" for k in cls.params)),
                          f"train:sae.arch={arch}"))  # fmt: skip
    return cases


CASES = fuzz_cases()


def at(node: dict, key: str):
    for part in key.split("."):
        node = node[part]
    return node


def valid_here(name: str, cfg) -> bool:
    """Whether the unmodified option passes the machine checks here too (trainer=gpu on a CPU machine does not):
    then they are part of the fuzz, else only what does not depend on the machine is."""
    try:
        check(name, cfg, machine=True)
    except ConfigError:
        check(name, cfg, machine=False)  # valid apart from the machine, or the case itself is wrong
        return False
    return True


@pytest.mark.parametrize("name, base, keys", [c[:3] for c in CASES], ids=[c[3] for c in CASES])
def test_every_key_of_every_group_option_converts_or_names_the_key(name, base, keys):
    """Each bad value either passes every check before work, or is refused by a one-line ConfigError naming its
    key: never another exception (a traceback), never a message that leaves the key out."""
    cfg = compose_config(name, base)
    raw = OmegaConf.to_container(cfg, resolve=False)
    machine = valid_here(name, cfg)
    gaps = []
    for key in keys:
        for value in BAD:
            OmegaConf.update(cfg, key, value, merge=False)
            try:
                check(name, cfg, machine)
            except ConfigError as exc:
                if key not in str(exc) or "\n" in str(exc).strip():
                    gaps.append(f"{key}={value!r}: the message does not name the key: {exc}")
            except Exception as exc:  # noqa: BLE001 - any other exception is the gap this test looks for
                gaps.append(f"{key}={value!r}: {type(exc).__name__}: {exc}")
            finally:
                OmegaConf.update(cfg, key, at(raw, key), merge=False)
    assert not gaps, f"{len(gaps)} gaps, e.g.\n" + "\n".join(gaps[:40])


def test_the_per_key_fuzz_covers_every_key_of_every_group_option():
    """Every leaf key of every yaml file under conf/ (every option of every group, both configs' own keys) is among
    the fuzzed ones for that option: a new key is fuzzed without a new test, and a group left out fails here."""
    fuzzed = {(base[0] if base else name, key) for name, base, keys, _ in CASES for key in keys}
    missing = [
        (f"{path.parent.name}={path.stem}", key)
        for path in sorted(CONF.glob("*/*.yaml"))
        if path.parent.name not in NOT_OURS
        for key in file_keys(path, f"{path.parent.name}.")
        if (f"{path.parent.name}={path.stem}", key) not in fuzzed
    ]
    missing += [(name, k) for name in CONFIGS for k in file_keys(CONF / f"{name}.yaml", "") if (name, k) not in fuzzed]
    assert not missing, missing
    archs = {base[0] for _, base, _, _ in CASES if base and base[0].startswith("sae.arch=")}
    assert archs == {f"sae.arch={a}" for a in ARCHITECTURES if a != "relu"}  # relu: the default option's case
