"""The artifact store under faults: corrupt pointers and unsealed versions are named and refused, and processes
saving the same name at once each get their own verified version."""

import contextlib
import json
import multiprocessing
import threading

import numpy as np
import pytest

from sae_sweep import DataError
from sae_sweep.analysis.collect import collect_local
from sae_sweep.store import LATEST, MANIFEST, ArtifactStore

from ..conftest import save_dict

pytestmark = pytest.mark.faults
NAME = "sae-L2-J8-s0"


@pytest.fixture
def store(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    save_dict(store, 8, 0)
    save_dict(store, 8, 0)  # v0 and v1; latest -> v1
    return store


@pytest.mark.parametrize("pointer", ["garbage\n", "v7\n", "", "\x00\xff"], ids=["garbage", "no-such", "empty", "bytes"])
def test_a_corrupt_latest_pointer_is_named_and_refused(store, pointer):
    latest = store.root / NAME / LATEST
    latest.write_bytes(pointer.encode("latin-1"))
    with pytest.raises(DataError, match=rf"{latest} is corrupt: .*not one of this artifact's versions \(v0, v1\)"):
        store.get(NAME)
    with pytest.raises(DataError, match="is corrupt"):
        collect_local(store.root, 2)  # the analysis refuses it too, rather than guessing a version
    assert store.get(f"{NAME}:v0").version == 0  # a version asked for by name is still usable


def test_a_version_folder_without_its_manifest_is_named_and_refused(store):
    (store.root / NAME / "v1" / MANIFEST).unlink()  # as if sealing never finished, or someone deleted it
    with pytest.raises(DataError, match=r"v1 is not a readable artifact \(it has no artifact.json.*Delete that folder"):
        store.get(NAME)
    with pytest.raises(DataError, match="not a readable artifact"):
        collect_local(store.root, 2)
    (store.root / NAME / "v1" / MANIFEST).write_text("{ not json")  # an edited manifest: the same answer
    with pytest.raises(DataError, match=r"v1/artifact.json is unreadable \(JSONDecodeError.*Delete that folder"):
        store.get(NAME)


def _save_at_the_same_time(root: str, barrier, seed: int) -> None:
    """Save a version of NAME, pausing (up to 3 s) right after reading the existing versions until the other process
    has read them too: the widest race two savers can have. With the store's lock, the second cannot read them until
    the first has sealed, so the first waits out the pause and both still get their own version."""
    store = ArtifactStore(root)
    read_versions = store._versions

    def versions_then_wait(name):
        found = read_versions(name)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=3)
        return found

    store._versions = versions_then_wait
    save_dict(store, 8, 0, counts=np.full(8, seed + 1, dtype=np.int64), extra={"steps": seed})


def test_two_processes_saving_one_name_at_once_get_two_verified_versions(tmp_path):
    root = tmp_path / "store"
    # fork: the children save tiny tensors (no torch thread pool runs); spawned ones would import torch and
    # lightning again (6 s each)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_save_at_the_same_time, args=(str(root), barrier, k)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    store = ArtifactStore(root)
    versions = sorted(p.name for p in (root / NAME).iterdir() if p.name.startswith("v"))
    assert versions == ["v0", "v1"]
    made = {store.get(f"{NAME}:{v}").metadata["steps"] for v in versions}  # each one verified against its sha256
    assert made == {0, 1}  # one from each process, none overwritten
    assert (root / NAME / LATEST).read_text().strip() in versions
    assert not list((root / NAME).glob(".tmp-*"))  # no unsealed leftovers


def test_a_manifest_must_list_every_file_of_its_version(store):
    folder = store.root / NAME / "v1"
    (folder / "extra.bin").write_bytes(b"\x00")  # a file no seal covers: it would be read unchecked
    with pytest.raises(DataError, match=r"lists no sha256 for \['extra.bin'\]: files added after it was sealed"):
        store.get(NAME)
    (folder / "extra.bin").unlink()
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "files": {}}))  # an emptied seal: every file unchecked
    with pytest.raises(
        DataError, match=r"lists no sha256 for \['config.json', 'firing_counts.npy', 'sae.safetensors'\]"
    ):
        store.get(NAME)
