"""The activation cache: (N, d_in) float16 rows that SAEs train on, shared by a sweep's jobs and read by the analysis.

A cache folder ``<cache>/activations/<key>/`` holds ``train.npy`` and ``val.npy`` ((N, d_in) float16) and
``meta.json`` (shapes, provenance, the sha256 of each file). Two producers fill it, in this one format: harvesting a
GPT's MLP (``train/harvest.py``) and generating synthetic data (``train/synthetic.py``). It is built once per key
(``files.build_once``): concurrent jobs wait for the one that builds it, and none reads a half-written cache.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sae_sweep.files import build_once, read_json, sealed_files, sha256_file, verify_files

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
META_FILE = "meta.json"
SPLITS = ("train.npy", "val.npy")


def new_rows(path: Path, n: int, d: int) -> np.memmap:
    """A new (n, d) float16 .npy file at ``path``, opened for writing, with all its disk space claimed up front.

    A memory-mapped file is sparse until written, and a write that finds the disk full then kills the process with
    SIGBUS, with no message and no cleanup. Claiming the space first (``posix_fallocate``) turns a full disk into an
    OSError (ENOSPC) here, before any row is computed, which the cache's builder reports in one line.
    """
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
    if hasattr(os, "posix_fallocate"):  # Linux; elsewhere the space is claimed as rows are written
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return out


@dataclass
class Activations:
    path: Path
    train: np.ndarray  # (n_tokens, d_in) float16 memmap
    val: np.ndarray  # (n_val_tokens, d_in) float16 memmap
    meta: dict

    @property
    def d_in(self) -> int:
        return self.train.shape[1]

    @property
    def key(self) -> str:
        return self.meta["key"]


def cache_folder(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / "activations" / key


def open_activations(path: Path, verify: bool = True) -> Activations:
    fix = f"Delete {path} to build it again."
    meta = read_json(path / META_FILE, "the activation cache's seal", fix, {"key": str, "files": dict})
    files = sealed_files(meta, path / META_FILE, "the activation cache's seal", fix, SPLITS)
    if verify:
        verify_files(path, files, "activation cache", fix)
    train = np.load(path / "train.npy", mmap_mode="r")
    val = np.load(path / "val.npy", mmap_mode="r")
    return Activations(path, train, val, meta)


def write_cache(cache_dir: str | Path, key: str, fill: Callable[[Path], dict], describe: str) -> Activations:
    """Return the activation cache ``<cache_dir>/activations/<key>``, building it first if it is not there.

    ``fill(folder)`` writes ``train.npy`` and ``val.npy`` into a temporary folder and returns what meta.json should
    say about them; the folder is then sealed (the sha256 of each file) and renamed into place.
    """
    final = cache_folder(cache_dir, key)

    def build(tmp: Path) -> None:
        t0 = time.perf_counter()
        meta = {"format": FORMAT_VERSION, "key": key, **fill(tmp)}
        meta["files"] = {name: sha256_file(tmp / name) for name in SPLITS}
        meta["seconds"] = round(time.perf_counter() - t0, 2)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        log.info("%s in %.1fs -> %s", describe, meta["seconds"], final)

    if not build_once(final, build, ready=META_FILE):
        log.info("reusing activation cache %s", final)
    return open_activations(final)
