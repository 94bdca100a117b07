"""Every product fuzzed, from the registry of what each stage writes (``sae_sweep/written_files.py``).

One smoke sweep is made once per test session, in this process: the smoke GPT, four dictionaries (two sizes, two
seeds), one on synthetic data, one run stopped before it saved (a checkpoint and no dictionary), the analysis and its
stable cores. For one file of each registry entry (one of each name, for the ``**`` entries), and for each of four
faults (deleted, cut to half, a byte flipped, well-formed content of the wrong shape or encoding), every stage that
reads the entry runs on a damaged copy. Each must refuse in one line that names the file (a ``SaeSweepError``, which
the command line prints as one line with exit status 2), or give the same answer as on the undamaged copy (having
built again what it needed, and said so): never another exception, never a different answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from sae_sweep import SaeSweepError, config
from sae_sweep.written_files import READERS, WRITTEN, entry_of

from ..conftest import CONF, SMOKE, LinkingApi, built_once, compose, fresh_root

pytestmark = pytest.mark.faults

SIZES, SEEDS, STOPPED = (128, 256), (0, 1), 32  # the sweep, and the size of the run stopped before it saved
FAULTS = ("delete", "truncate", "flip", "wrong-shape")


# ------------------------------------------------------------------------------------------ the smoke sweep


def train_job(root: Path, *overrides: str):
    base = SYNTHETIC if "data=synthetic" in overrides else SMOKE
    quiet = ["logger=none", "trainer.progress_bar=false"]
    return config.sae_job(compose([*base, f"paths.root={root}", *quiet, *overrides]))


def analyze_job(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="analyze", overrides=[f"paths.root={root}", "logger=none", *overrides])
    return config.analyze_job(cfg)


# Synthetic data at the smoke's sizes (experiment=smoke sets keys of the corpus, which synthetic data has not)
SYNTHETIC = ["harvest.n_tokens=20480", "harvest.n_val_tokens=4096", "sae.epochs=1", "sae.until=budget"]
JOBS = {
    "finished": ("sae.dict_size=128", "sae.seed=0"),
    "stopped": (f"sae.dict_size={STOPPED}", "sae.seed=0"),
    "synthetic": ("data=synthetic", "data.n_features=32", "sae.dict_size=64"),
}


@pytest.fixture(scope="session")
def smoke_sweep(gpt_root, tmp_path_factory):
    """paths.root of the smoke sweep, and each reader's answer on it undamaged (built once per test run)."""
    folder = built_once(tmp_path_factory, "fuzz", lambda folder: build_smoke_sweep(gpt_root, folder))
    return folder / "root", pickle.loads((folder / "clean.pickle").read_bytes())


def build_smoke_sweep(gpt_root: Path, folder: Path) -> None:
    """The smoke sweep in ``folder/root`` and, in ``folder/clean.pickle``, each reader's answer on it undamaged."""
    from sae_sweep.analysis.job import run as analyse  # noqa: PLC0415
    from sae_sweep.train.pretrain import run as pretrain  # noqa: PLC0415
    from sae_sweep.train.sae_stage import run as train  # noqa: PLC0415

    root = fresh_root(gpt_root, folder)
    for J in SIZES:
        for seed in SEEDS:  # one with W&B (offline): its run folder holds a W&B run and a lineage record
            train(
                train_job(root, f"sae.dict_size={J}", f"sae.seed={seed}", *["logger=wandb_offline"][J + seed - 128 :])
            )
    train(train_job(root, *JOBS["synthetic"]))
    for stopped in (train(train_job(root, *JOBS["stopped"])), pretrain(pretrain_job(root, *GPTS["stopped"]))):
        shutil.rmtree(stopped.path.parent)  # as if killed after its last checkpoint: no version, no done.json
        shutil.rmtree(run_folder(root, stopped.name) / "lineage", ignore_errors=True)  # written as it saves
        (run_folder(root, stopped.name) / "done.json").unlink()
    analyse(analyze_job(root, "analysis.n_boot=20", "analysis.n_perm=20"))
    clean = {}
    for reader in READERS:  # each on its own copy: a reader may write (the stopped run saves its dictionary)
        here = folder / f"clean-{reader}"
        here.mkdir()
        clean[reader] = READ[reader](copy_of(root, here), here)
    (folder / "clean.pickle").write_bytes(pickle.dumps(clean))


def copy_of(root: Path, where: Path) -> Path:
    """A copy of ``root`` at ``where/root``: run folders copied (a resumed run appends to its curves), the rest
    hard-linked (no stage rewrites a cache, store or analysis file in place; ``damage`` replaces the file it hits)."""
    out = where / "root"
    shutil.copytree(root, out, copy_function=os.link, ignore=lambda d, names: ["runs"] if Path(d) == root else [])
    shutil.copytree(root / "runs", out / "runs")
    return out


def run_folder(root: Path, name: str) -> Path:
    (folder,) = [p for p in (root / "runs").glob(f"{name}-*") if p.is_dir()]
    return folder


# ------------------------------------------------------------------------------------------ the readers


def tensors_digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode() + tensors[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def read_tokens(root: Path, _: Path, damaged: str = ""):
    from sae_sweep.train.tokens import prepare  # noqa: PLC0415

    data = prepare(_data_config(root), root / "cache")
    return hashlib.sha256(data.train.tobytes() + data.val.tobytes()).hexdigest(), data.tokenizer.vocab_size


def _data_config(root: Path):
    from sae_sweep.train.corpus import DataConfig  # noqa: PLC0415

    return config.build(DataConfig, compose([*SMOKE, f"paths.root={root}"]).data, "data")


def read_sae(root: Path, _: Path, damaged: str = "") -> dict:
    """The SAE stage, job -> its dictionary: a finished job (its saved dictionary found again), the stopped one
    (resumed and saved) and the synthetic one. Given the ``damaged`` file, only the jobs that read it."""
    from sae_sweep.dictionary import load_dictionary  # noqa: PLC0415
    from sae_sweep.train.sae_stage import run as train  # noqa: PLC0415

    out = {}
    for name in _readers_of(damaged):
        art = train(train_job(root, *JOBS[name]))
        out[name] = tensors_digest(load_dictionary(art.path).tensors)
    return out


def _readers_of(damaged: str) -> list[str]:
    if damaged.startswith("runs/sae-"):  # a run folder is read by its own job
        return ["stopped" if f"-J{STOPPED}-" in damaged else "synthetic" if "synthetic" in damaged else "finished"]
    if "synthetic" in damaged:
        return ["synthetic"]
    return ["finished"] if damaged else list(JOBS)  # the GPT, the caches: read alike by every job that uses them


def pretrain_job(root: Path, *overrides: str):
    return config.pretrain_job(compose([*SMOKE, "stage=pretrain", f"paths.root={root}", "logger=none", *overrides]))


GPTS = {"finished": (), "stopped": ("pretrain.seed=1",)}  # the smoke GPT, and a second one stopped before it saved


def read_pretrain(root: Path, _: Path, damaged: str = "") -> dict:
    """The pretraining stage, job -> its GPT: the finished one found again, the stopped one resumed and saved."""
    from sae_sweep.train.gpt import load_gpt  # noqa: PLC0415
    from sae_sweep.train.pretrain import run as pretrain  # noqa: PLC0415

    jobs = ["stopped"] if "gpt-embedded-s1-" in damaged else ["finished"] if damaged else list(GPTS)
    out = {}
    for name in jobs:
        art = pretrain(pretrain_job(root, *GPTS[name]))
        out[name] = (art.ref, tensors_digest(load_gpt(art.path).model.state_dict()))
    return out


def read_analysis(root: Path, _: Path, damaged: str = ""):
    """What analyze.py reads before it measures: every variant's dictionaries, their true features, the cache."""
    from sae_sweep.analysis.job import _collect, _true_features  # noqa: PLC0415
    from sae_sweep.analysis.measures.verdicts import activation_cache  # noqa: PLC0415

    job = analyze_job(root)
    found, stores, _ = _collect(job)
    out = {}
    for variant, dicts in sorted(found.items()):
        truth = _true_features(stores, dicts)
        cache = activation_cache(dicts, job.paths.cache)
        out[variant] = (
            sorted((d.name, tensors_digest(d.tensors), d.firing_counts.tobytes()) for d in dicts.values()),
            None if truth is None else hashlib.sha256(np.ascontiguousarray(truth).tobytes()).hexdigest(),
            None if cache is None else hashlib.sha256(np.asarray(cache.train).tobytes()).hexdigest(),
        )
    return out


def read_export(root: Path, out: Path, damaged: str = ""):
    from sae_sweep.interop.export import default_scores, export_sweep  # noqa: PLC0415

    written = export_sweep(root / "store", out / "export", default_scores(root / "store"))
    return sorted(  # the path of the analysis each export names is the copy's own: the rest must be the same
        (str(p.relative_to(out)), hashlib.sha256(p.read_bytes().replace(str(root).encode(), b"ROOT")).hexdigest())
        for folder in written
        for p in folder.rglob("*")
        if p.is_file()
    )


def read_core(root: Path, _: Path, damaged: str = ""):
    from sae_sweep.analysis.stable_core import load_core  # noqa: PLC0415
    from sae_sweep.store import ArtifactStore  # noqa: PLC0415

    store = ArtifactStore(root / "analysis" / "core")
    return sorted((n, tensors_digest(load_core(store.get(n).path).tensors)) for n in store.names())


def read_sync(root: Path, _: Path, damaged: str = ""):
    from sae_sweep import sync  # noqa: PLC0415

    api, uploaded = LinkingApi(), []
    with contextlib.redirect_stderr(io.StringIO()) as said:
        code = sync.main([str(root)], api=api, uploader=lambda folders, *a: uploaded.append(sorted(folders)) or 0)
    if code == 2:  # the command's refusal: one line on stderr, exit status 2
        raise SaeSweepError(said.getvalue().strip().removeprefix("error: "))
    return code, [sorted(str(p.relative_to(root)) for p in f) for f in uploaded], sorted(api.links)


READ = {
    "tokens": read_tokens,
    "sae": read_sae,
    "pretrain": read_pretrain,
    "analysis": read_analysis,
    "export": read_export,
    "core": read_core,
    "sync": read_sync,
}


# ------------------------------------------------------------------------------------------ the faults


def _wrong_json(value, top: bool = True):
    """The same keys, each value of another type (a table inside emptied): well-formed, the wrong shape."""
    if isinstance(value, dict):
        return {k: _wrong_json(v, top=False) for k, v in value.items()} if top and value else {}
    if isinstance(value, list):
        return {"0": value[:1]}
    if isinstance(value, str):
        return 7
    return "x" if value is not None else {}


def wrong_shape(path: Path) -> bytes:
    """Well-formed content of the kind ``path`` holds, of the wrong shape or encoding."""
    from safetensors.torch import save  # noqa: PLC0415

    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            return json.dumps(_wrong_json(json.loads(data))).encode()
        except ValueError:
            return b"[]"
    if path.suffix in (".npy", ".npz"):
        buf = io.BytesIO()
        np.save(buf, np.arange(6, dtype=np.float64).reshape(3, 2))
        return buf.getvalue()
    if path.suffix == ".safetensors":
        return save({"other": torch.zeros(2, 3)})
    if path.suffix == ".ckpt":
        buf = io.BytesIO()
        torch.save({"state_dict": {"weight": torch.zeros(2)}, "global_step": 3}, buf)
        return buf.getvalue()
    if path.suffix == ".bin":
        return np.frombuffer(data[: len(data) // 2 * 2], dtype=np.uint16).astype(np.int32).tobytes()
    if path.suffix == ".sha256":
        return ("0" * 64 + "\n").encode()
    if path.suffix == ".csv":
        return b"a,b\n1,2\n"
    return data.decode("utf-8", errors="replace").encode("utf-16")  # text in another encoding (latest, yaml, md)


def damage(path: Path, fault: str) -> None:
    data, i = path.read_bytes(), path.stat().st_size // 2
    damaged = {
        "truncate": data[:i],
        "flip": data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :] if data else b"\xff",
        "wrong-shape": wrong_shape(path) if fault == "wrong-shape" else b"",
    }
    path.unlink()  # a new file in its place: the copy's other files are hard links to the sweep's
    if fault != "delete":
        path.write_bytes(damaged[fault])


def representatives(root: Path) -> dict[str, tuple[str, ...]]:
    """One file of each entry (of each name under a ``**`` entry), relative to root, with the entry's readers.
    Run-folder files come from the stopped run where it has them: its checkpoint is read, a finished run's is not."""
    stopped = (f"sae-L2-J{STOPPED}-s0-", "gpt-embedded-s1-")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    files.sort(key=lambda f: not any(s in f for s in stopped))  # stable: the stopped runs' files first
    chosen: dict[tuple, str] = {}
    for f in files:
        entry = entry_of(f)
        if entry is None or not entry.readers:
            continue
        tail = f.split("/v", 1)[-1].split("/", 1)[-1] if "**" in entry.pattern else ""
        chosen.setdefault((entry.pattern, tail), f)  # e.g. (store/sae-*/v*/**, saelens/cfg.json)
    return {f: entry_of(f).readers for f in chosen.values()}


def _cases():
    # the files are known only once the sweep exists, so the cases are (fault, reader) and each test walks the
    # registry's files: see test_every_damaged_product_is_refused_or_read_the_same
    return [(fault, reader) for fault in FAULTS for reader in READ]


@pytest.mark.parametrize("fault, reader", _cases(), ids=lambda x: str(x))
def test_every_damaged_product_is_refused_or_read_the_same(smoke_sweep, tmp_path, caplog, fault, reader):
    root, clean = smoke_sweep
    failures = []
    for k, (relative, readers) in enumerate(sorted(representatives(root).items())):
        if reader not in readers:
            continue
        copy = tmp_path / f"case{k}"
        damage(copy_of(root, copy) / relative, fault)
        caplog.clear()
        try:
            with caplog.at_level(logging.INFO):
                answer = READ[reader](copy / "root", copy, relative)
        except SaeSweepError as exc:
            said = str(exc)
            named = Path(relative).name in said or Path(relative).parent.name in said
            if "\n" in said.strip() or not named:
                failures.append(f"{relative} ({fault}): {reader} refused without naming it in one line: {said}")
        except Exception as exc:  # noqa: BLE001 - what the test is for
            failures.append(f"{relative} ({fault}): {reader} raised {type(exc).__name__}: {str(exc)[:300]}")
        else:
            if answer != (_part(clean[reader], answer) if reader in ("sae", "pretrain") else clean[reader]):
                failures.append(f"{relative} ({fault}): {reader} gave a different answer, silently")
        shutil.rmtree(copy, ignore_errors=True)
    assert not failures, "\n".join(failures)


def _part(clean: dict, answer: dict) -> dict:
    return {job: clean[job] for job in answer}


def test_every_file_the_smoke_sweep_leaves_is_registered(smoke_sweep):
    root, _ = smoke_sweep
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    assert len(files) > 100
    assert [f for f in files if entry_of(f) is None] == []


def test_every_reader_of_the_registry_is_run_and_every_read_entry_is_fuzzed(smoke_sweep):
    root, _ = smoke_sweep
    assert set(READ) == set(READERS)
    fuzzed = {entry_of(f).pattern for f in representatives(root)}
    read = {w.pattern for w in WRITTEN if w.readers}
    not_made = {"runs/*/csv/metrics.csv"} & set()  # every read entry is made by the smoke sweep
    assert read - fuzzed == not_made, sorted(read - fuzzed)


# ------------------------------------------------------------------------------------------ the guards, exactly


def test_a_registry_pattern_star_stays_within_one_folder():
    assert entry_of("cache/tokens/k/meta.json").pattern == "cache/tokens/*/meta.json"
    assert entry_of("cache/tokens/k/extra/meta.json") is None  # one segment only
    assert entry_of("store/sae-L2-J8-s0/v3/saelens/cfg.json").pattern == "store/sae-*/v*/**"  # any depth
    assert entry_of("store/sae-L2-J8-s0/v3/artifact.json").pattern == "store/sae-*/v*/artifact.json"  # first match


def test_a_done_marker_naming_another_runs_version_is_set_aside(tmp_path, caplog):
    from sae_sweep.store import ArtifactStore  # noqa: PLC0415
    from sae_sweep.train.runs import DONE_FILE, finished_artifact  # noqa: PLC0415

    from ..conftest import save_dict  # noqa: PLC0415

    store = ArtifactStore(tmp_path / "store")
    theirs = save_dict(store, 8, 0, extra={"run_id": "run-a"})
    mine = save_dict(store, 8, 0, extra={"run_id": "run-b"})
    run_b = tmp_path / "runs" / "run-b"
    run_b.mkdir(parents=True)
    (run_b / DONE_FILE).write_text(json.dumps({"artifact": theirs.ref}))
    assert finished_artifact(run_b, store, False, "sae-L2-J8-s0").ref == mine.ref == "sae-L2-J8-s0:v1"
    assert "not this run's completion marker (it names sae-L2-J8-s0:v0, which run run-a saved" in caplog.text
    assert json.loads((run_b / DONE_FILE).read_text())["artifact"] == mine.ref  # recorded again, rightly


def test_a_seal_must_list_a_sha256_for_every_file(tmp_path):
    from sae_sweep import DataError  # noqa: PLC0415
    from sae_sweep.files import sealed_files  # noqa: PLC0415

    digest = "ab" * 32
    assert sealed_files({"files": {"a.npy": digest}}, tmp_path, "seal", "fix", ["a.npy"]) == {"a.npy": digest}
    with pytest.raises(DataError, match=r"seal .* it lists no sha256 for \['b.npy'\]. fix"):
        sealed_files({"files": {"a.npy": digest}}, tmp_path, "seal", "fix", ["a.npy", "b.npy"])
    with pytest.raises(DataError, match="not a name -> sha256 table"):
        sealed_files({"files": {"a.npy": "ab"}}, tmp_path, "seal", "fix")
