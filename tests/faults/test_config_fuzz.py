"""Bad configuration, fuzzed: any value for any key either converts or fails with a ConfigError naming the key."""

import math

import pytest
from hydra.errors import ConfigCompositionException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sae_sweep import ConfigError, config

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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


def test_fuzz_covers_every_group_file():
    # control/* only set keys of the other groups (gpt, sae.*), which are fuzzed above
    groups = {p.parent.name for p in CONF.glob("*/*.yaml")} - {"experiment", "paths", "hydra", "source", "control"}
    assert groups <= {k.split(".")[0] for k in KEYS}
