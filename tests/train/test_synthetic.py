"""Synthetic activations with known features (data=synthetic), the untrained-GPT control and variant names."""

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sae_sweep import ConfigError, DataError, config
from sae_sweep import truth as S
from sae_sweep.activations import open_activations
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.dictionary import load_dictionary
from sae_sweep.store import ArtifactStore, Paths
from sae_sweep.tracking import LoggerConfig
from sae_sweep.train import synthetic as SYN
from sae_sweep.train.gpt import GPT, WEIGHTS_FILE
from sae_sweep.train.harvest import HarvestConfig
from sae_sweep.train.pretrain import export_untrained
from sae_sweep.train.sae import SAEConfig
from sae_sweep.train.sae_stage import SAEJob, resolve_gpt
from sae_sweep.train.synthetic import sample, synthetic_activations
from sae_sweep.train.trainer import TrainerConfig
from sae_sweep.truth import SyntheticConfig, load_true_features, true_features

from ..conftest import SMOKE, compose, run_train

TINY = SyntheticConfig(n_features=16, d_in=8, active=3.0, noise=0.0, seed=1)


def test_features_are_seeded_unit_rows():
    f = true_features(SyntheticConfig(n_features=40, d_in=6))
    assert f.shape == (40, 6) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), np.ones(40), atol=1e-6)
    np.testing.assert_array_equal(f, true_features(SyntheticConfig(n_features=40, d_in=6)))
    assert not np.allclose(f, true_features(SyntheticConfig(n_features=40, d_in=6, seed=1)))


def test_a_hierarchy_makes_parts_of_parent_directions_and_leaves_the_rest_as_without_one():
    plain, cfg = SyntheticConfig(n_features=40, d_in=64), SyntheticConfig(n_features=40, d_in=64, groups=5, children=4)
    f, g = true_features(cfg), S.true_groups(cfg)
    assert g.tolist() == [i // 4 for i in range(20)] + [-1] * 20
    np.testing.assert_array_equal(f[20:], true_features(plain)[20:])  # the features in no group are unchanged
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), np.ones(40), atol=1e-6)
    cos = f[:20] @ f[:20].T
    same = g[:20, None] == g[None, :20]
    off = ~np.eye(20, dtype=bool)
    # parts of one parent: cosine about 1 / (1 + spread^2) = 0.64; of two parents about 0 (d = 64: sd 0.125)
    assert cos[same & off].min() > 0.3 and np.abs(cos[~same]).max() < 0.5
    assert "groups" not in plain.recorded() and cfg.recorded()["groups"] == 5  # names without a hierarchy: unchanged


def test_every_feature_active_with_constant_magnitude_gives_their_sum():
    cfg = SyntheticConfig(n_features=3, d_in=4, active=3.0, magnitude="constant", noise=0.0)
    f = true_features(cfg)
    x, codes = sample(cfg, f, "train", 0, 5)
    np.testing.assert_array_equal(codes.toarray(), np.ones((5, 3), dtype=np.float32))
    np.testing.assert_allclose(x, np.tile(f.sum(axis=0), (5, 1)), atol=1e-6)


@pytest.mark.parametrize("magnitude", S.MAGNITUDES)
def test_noiseless_activations_are_non_negative_combinations_of_the_features(magnitude):
    cfg = replace(TINY, magnitude=magnitude)
    f = true_features(cfg)
    x, codes = sample(cfg, f, "val", 100, 5100)
    assert x.shape == (5000, 8) and codes.shape == (5000, 16) and codes.values.size > 0
    assert (codes.values > 0).all()
    np.testing.assert_allclose(x, codes.toarray().astype(np.float64) @ f, atol=1e-5)
    assert np.abs(codes.values.mean() - 1.0) < 0.05  # every law has mean 1
    if magnitude == "uniform":
        assert codes.values.max() <= 2.0
    if magnitude == "constant":
        assert set(codes.values.tolist()) == {1.0}


def test_noise_is_isotropic_gaussian_of_the_configured_std():
    cfg = replace(TINY, noise=0.1)
    f = true_features(cfg)
    x, codes = sample(cfg, f, "train", 0, 20000)
    resid = x - codes.toarray() @ f
    np.testing.assert_allclose(resid.std(axis=0), np.full(8, 0.1), rtol=0.03)
    assert np.abs(resid.mean()) < 2e-3


def test_empirical_sparsity_is_active():
    cfg = SyntheticConfig(n_features=512, active=8.0)
    _, codes = sample(cfg, true_features(cfg), "train", 0, 20000)
    per_row = np.bincount(codes.rows, minlength=20000)
    assert abs(per_row.mean() - 8.0) < 0.1  # the mean's std is sqrt(8 / 20000) = 0.02
    assert abs(per_row.var() - 8.0 * (1 - 8 / 512)) < 0.5  # binomial: each feature on independently
    freq = np.bincount(codes.cols, minlength=512) / 20000
    assert abs(freq.mean() - 8 / 512) < 1e-3 and freq.min() > 0


def test_rows_do_not_depend_on_the_chunks_they_are_generated_in(tmp_path):
    f = true_features(TINY)
    whole_x, whole_c = sample(TINY, f, "train", 0, 9000)
    parts = [sample(TINY, f, "train", lo, hi) for lo, hi in ((0, 1), (1, 4097), (4097, 9000))]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in parts]), whole_x)
    np.testing.assert_array_equal(np.concatenate([c.toarray() for _, c in parts]), whole_c.toarray())
    assert not np.array_equal(sample(TINY, f, "val", 0, 9000)[0], whole_x)  # the splits are independent

    store = ArtifactStore(tmp_path / "store")
    small, _ = synthetic_activations(TINY, 9000, 100, tmp_path / "a", store, chunk=1000)
    big, _ = synthetic_activations(TINY, 9000, 100, tmp_path / "b", store, chunk=1 << 16)
    assert (small.path / "train.npy").read_bytes() == (big.path / "train.npy").read_bytes()
    np.testing.assert_array_equal(np.asarray(small.train), whole_x.astype(np.float16))


def test_cache_is_harvest_format_and_reused(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path / "store")
    acts, features = synthetic_activations(TINY, 5000, 700, tmp_path / "cache", store)
    assert acts.path.parent == tmp_path / "cache" / "activations" and acts.path.name == acts.key
    assert acts.train.shape == (5000, 8) and acts.val.shape == (700, 8) and acts.train.dtype == np.float16
    assert acts.d_in == 8 and acts.meta["synthetic"] == TINY.recorded()
    assert acts.meta["features"]["artifact"] == f"{S.features_name(TINY)}:v0"
    assert set(acts.meta["files"]) == {"train.npy", "val.npy"}
    open_activations(acts.path, verify=True)  # the sha256 recorded in meta.json match
    assert features.type == S.FEATURES_TYPE and features.version == 0
    np.testing.assert_array_equal(np.load(features.path / S.FEATURES_FILE), true_features(TINY))
    assert json.loads((features.path / S.CONFIG_FILE).read_text()) == TINY.recorded()

    monkeypatch.setattr(SYN, "_write_split", lambda *a: (_ for _ in ()).throw(AssertionError("generated twice")))
    monkeypatch.setattr(S, "true_features", lambda *a: (_ for _ in ()).throw(AssertionError("features rebuilt")))
    again, features_again = synthetic_activations(TINY, 5000, 700, tmp_path / "cache", store)
    assert again.path == acts.path and features_again.ref == features.ref
    assert store.names() == [S.features_name(TINY)] and store.get(S.features_name(TINY)).version == 0


@pytest.mark.parametrize(
    "change",
    [
        {"n_features": 17},
        {"d_in": 9},
        {"active": 2.5},
        {"magnitude": "uniform"},
        {"noise": 0.01},
        {"seed": 2},
        {"groups": 2},
        {"groups": 2, "children": 3},
        {"groups": 2, "spread": 0.5},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_value_changes_the_cache_key_and_the_features_name(change):
    base = SYN.cache_key(TINY, 1000, 100)
    assert SYN.cache_key(replace(TINY, **change), 1000, 100) != base
    assert S.features_name(replace(TINY, **change)) != S.features_name(TINY)
    assert len({base, SYN.cache_key(TINY, 1001, 100), SYN.cache_key(TINY, 1000, 101)}) == 3
    assert SYN.cache_key(TINY, 1000, 100) == base  # and nothing else does


@pytest.mark.parametrize(
    "override, needle",
    [
        ("data.n_features=0", "data.n_features must be a positive integer, got 0"),
        ("data.d_in=-3", "data.d_in must be a positive integer, got -3"),
        ("data.active=0", "data.active (expected active features per activation) must be in (0, data.n_features=512]"),
        ("data.active=600", "data.active (expected active features per activation) must be in (0, data.n_features="),
        ("data.magnitude=gamma", "data.magnitude must be one of ('exponential', 'uniform', 'constant'), got 'gamma'"),
        ("data.noise=-0.1", "data.noise (a standard deviation) must be a finite number >= 0, got -0.1"),
        ("data.noise=inf", "data.noise (a standard deviation) must be a finite number >= 0, got inf"),
        ("data.seed=-1", "data.seed must be a non-negative integer, got -1"),
        ("data.groups=-1", "data.groups must be an integer >= 0, got -1"),
        ("data.children=1", "data.children must be an integer >= 2, got 1"),
        ("data.groups=300", "data.groups x data.children = 600 parts, more than data.n_features=512"),
        ("data.spread=0", "data.spread must be a finite number > 0, got 0"),
        ("data.noise=loud", "data.noise must be a number, got 'loud'"),
        ("+data.tokenizer=bpe", "data: unknown key(s) ['tokenizer']; allowed keys: ['corpus', 'n_features'"),
        ("gpt=gpt-embedded-s0", "gpt=gpt-embedded-s0: data=synthetic generates the activations"),
    ],
)
def test_bad_synthetic_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as exc:
        config.sae_job(compose(["data=synthetic", override]))
    assert needle in str(exc.value)


def test_pretraining_on_synthetic_data_is_refused_before_any_work(tmp_path):
    import train  # noqa: PLC0415 - the real entry point's run(cfg)

    cfg = compose(["stage=pretrain", "data=synthetic", f"paths.root={tmp_path / 'root'}"])
    with pytest.raises(ConfigError, match="there is no GPT to pretrain on synthetic data") as exc:
        train.run(cfg)
    assert "`python train.py -m experiment=synthetic`" in str(exc.value)
    assert not (tmp_path / "root").exists()


def _job(**kw) -> SAEJob:
    sae = SAEConfig(**{k: kw.pop(k) for k in ("l1_coeff", "resample_every", "arch", "tag") if k in kw})
    return SAEJob(HarvestConfig(), sae, TrainerConfig(), LoggerConfig(), Paths(Path("x")), **kw)


@pytest.mark.parametrize(
    "kw, name",
    [
        ({}, "sae-L2-J1024-s0"),
        ({"synthetic": SyntheticConfig()}, "sae-L2-J1024-s0-synthetic"),
        ({"gpt": "untrained"}, "sae-L2-J1024-s0-untrained"),
        ({"resample_every": 500}, "sae-L2-J1024-s0-resample"),
        ({"l1_coeff": 3e-3}, "sae-L2-J1024-s0-l1-0.003"),
        ({"l1_coeff": 1e-5}, "sae-L2-J1024-s0-l1-1e-05"),
        ({"gpt": "untrained", "resample_every": 1, "l1_coeff": 3e-4}, "sae-L2-J1024-s0-untrained-resample-l1-0.0003"),
        (
            {"synthetic": SyntheticConfig(), "resample_every": 1, "l1_coeff": 0.0},
            "sae-L2-J1024-s0-synthetic-resample-l1-0",
        ),
        ({"gpt": "gpt-embedded-s0", "l1_coeff": 1e-3}, "sae-L2-J1024-s0"),
        ({"tag": "onepass"}, "sae-L2-J1024-s0-onepass"),
        ({"arch": "topk", "tag": "onepass", "l1_coeff": 3e-3}, "sae-L2-J1024-s0-topk-k20-onepass"),
        ({"synthetic": SyntheticConfig(), "l1_coeff": 5e-3, "tag": "a.1"}, "sae-L2-J1024-s0-synthetic-l1-0.005-a.1"),
        ({"synthetic": SyntheticConfig(groups=8, children=4)}, "sae-L2-J1024-s0-synthetic-hier8x4"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_variant_names(kw, name):
    job = _job(**kw)
    assert job.name == name
    assert job.variant == name.removeprefix("sae-L2-J1024-s0").removeprefix("-")
    assert job.group == "sae-L2-J1024" + name.removeprefix("sae-L2-J1024-s0")


@pytest.mark.parametrize("tag", ["One", "-x", "a b", "a_b"])
def test_a_tag_that_cannot_go_into_a_name_is_refused(tag):
    with pytest.raises(ConfigError, match="sae.tag must be lower-case letters, digits and dots"):
        SAEConfig(tag=tag)


def test_config_builds_the_variants():
    syn = config.sae_job(compose(["data=synthetic", "sae.l1_coeff=3e-3", "data.n_features=64"]))
    assert syn.synthetic == SyntheticConfig(n_features=64) and syn.name == "sae-L2-J1024-s0-synthetic-l1-0.003"
    untrained = config.sae_job(compose([*SMOKE, "gpt=untrained", "pretrain.seed=3"]))
    assert untrained.synthetic is None and untrained.name == "sae-L2-J256-s0-untrained"
    assert untrained.untrained.untrained_name == "gpt-embedded-s3-untrained"
    assert untrained.untrained.model.block_size == 64 and untrained.untrained.data.vocab_size == 512  # smoke's
    plain = config.sae_job(compose([]))
    assert plain.synthetic is None and plain.untrained is None and plain.name == "sae-L2-J1024-s0"


def _weights_digest(art) -> str:
    return json.loads((art.path / "artifact.json").read_text())["files"][WEIGHTS_FILE]


def test_untrained_gpt_is_the_seeded_init_deterministic_and_reused(tmp_path):
    job = config.sae_job(compose([*SMOKE, "gpt=untrained", f"paths.root={tmp_path}"])).untrained
    art = export_untrained(job)
    assert (art.name, art.version, art.type) == ("gpt-embedded-s0-untrained", 0, "model")
    assert art.metadata["untrained"] is True and art.metadata["steps"] == 0
    model_cfg = replace(job.model, vocab_size=art.metadata["model"]["vocab_size"])
    torch.manual_seed(0)
    init = GPT(model_cfg).state_dict()
    for key, value in load_file(str(art.path / WEIGHTS_FILE)).items():
        torch.testing.assert_close(value, init[key], rtol=0, atol=0)
    assert abs(art.metadata["val_loss"] - np.log(model_cfg.vocab_size)) < 0.3  # an untrained model knows nothing

    assert export_untrained(job).ref == "gpt-embedded-s0-untrained:v0"  # reused, not rebuilt
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(DataError, match="no pretrained GPT"):  # never picked as "the newest GPT"
        resolve_gpt(store, None)
    digest = _weights_digest(art)
    shutil.rmtree(art.path.parent)
    rebuilt = export_untrained(job)
    assert rebuilt.ref == "gpt-embedded-s0-untrained:v0" and _weights_digest(rebuilt) == digest
    other_seed = export_untrained(replace(job, pretrain=replace(job.pretrain, seed=1)))
    assert other_seed.name == "gpt-embedded-s1-untrained" and _weights_digest(other_seed) != digest
    bigger = export_untrained(replace(job, model=replace(job.model, block_size=32)))
    assert bigger.ref == "gpt-embedded-s0-untrained:v1"  # another model config is a new version, not a stale reuse


def test_load_true_features_reads_the_artifact_or_regenerates(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    art = S.save_true_features(store, TINY)
    recorded = {"synthetic": {**asdict(TINY), "features": art.ref}, "gpt": None}
    np.testing.assert_array_equal(load_true_features(store, recorded["synthetic"]), true_features(TINY))
    empty = ArtifactStore(tmp_path / "empty")
    np.testing.assert_array_equal(load_true_features(empty, recorded["synthetic"]), true_features(TINY))
    assert load_true_features(store, None) is None  # a dictionary of GPT activations records synthetic: null


@pytest.mark.slow
def test_a_dictionary_at_least_the_true_count_recovers_the_true_features(tmp_path):
    """Issue 6: >= 90% of the true features found at MCS > 0.9 by a dictionary at least as large as their count.

    64 true features, 2x and 4x dictionaries. (At exactly 64 the same run finds about 89%: a dictionary with no spare
    features leaves a few true ones merged or half-learned, so the test asks for the margin the issue allows.)
    """
    args = [
        "-m",
        "data=synthetic",
        "data.n_features=64",
        "data.active=4",
        "harvest.n_tokens=300000",
        "harvest.n_val_tokens=10000",
        "sae.dict_size=128,256",
        "sae.l1_coeff=3e-3",
        "sae.epochs=1",
        "logger=none",
    ]
    proc = run_train(args, tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (cache,) = (tmp_path / "cache" / "activations").glob("synthetic-*")  # one cache for both jobs
    assert not list((tmp_path / "cache" / "activations").glob(".*tmp*"))  # and nothing half-written
    assert cache.name.startswith("synthetic-F64-N300000-") and (cache / "meta.json").is_file()
    store = ArtifactStore(tmp_path / "store")
    assert sorted(store.names("sae-dictionary")) == [
        "sae-L2-J128-s0-synthetic-l1-0.003",
        "sae-L2-J256-s0-synthetic-l1-0.003",
    ]
    for name in store.names("sae-dictionary"):
        d = load_dictionary(store.get(name).path)
        assert d.config.gpt is None and d.config.variant == "synthetic-l1-0.003"
        truth = load_true_features(store, d.config.synthetic)
        assert truth.shape == (64, 128)
        mcs, _ = max_cosine_similarity(truth, d.decoder.T, device="cpu")
        assert (mcs > 0.9).mean() >= 0.9, (name, np.sort(mcs)[:10])
