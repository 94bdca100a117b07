"""Every file sae-sweep leaves under ``paths.root``, in one registry: which stage writes it, which stage reads it
back, and what guards that reading.

A damaged file (deleted, cut short, a byte flipped, or replaced by well-formed content of the wrong shape) must make
the stage that reads it either refuse in one line that names the file and the fix, or build it again and say so;
never a traceback, and never a smaller or different answer. ``tests/faults/test_product_fuzz.py`` injects each of
those four faults into one file of each entry below and runs the entry's readers; another test checks that every
file a smoke run leaves matches an entry, so a new product is fuzzed as soon as it is registered, and one that is
not registered fails that test.

Patterns are relative to ``paths.root``: ``*`` stands for any part of one path segment, ``**`` for any number of
segments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

# The stages that read products back (what each means, for the tests and the README):
#   tokens      the token cache, opened by pretraining and by the SAE stage's harvest (train/tokens.py)
#   sae         the SAE stage: the GPT, the token and activation caches, and its run folder (a finished run's
#               done.json, an unfinished one's checkpoint, curves and snapshots) (train/sae_stage.py)
#   pretrain    the pretraining stage: its run folder's done.json and the GPT it saved (train/pretrain.py)
#   analysis    analyze.py's inputs: the dictionaries, their true features, the activation cache (analysis/job.py)
#   export      python -m sae_sweep.interop.export: the dictionaries and latent_scores.csv/json
#   core        a stable core read back (analysis/stable_core.py load_core), as SAELens users and the export do
#   sync        python -m sae_sweep.sync: lineage records and W&B's offline run folders
READERS = ("tokens", "sae", "pretrain", "analysis", "export", "core", "sync")


@dataclass(frozen=True)
class Written:
    pattern: str  # relative to paths.root
    writer: str  # the stage (or library) that writes it
    readers: tuple[str, ...]  # the stages that read it back (READERS); () when none does
    guard: str  # what a damaged copy meets


_SEALED = "its sha256 in the folder's seal (meta.json / artifact.json), checked on every read"
_LOCK = "an flock target: its content is never read; a missing one is made again"
_DONE = "checked whole, and must name the run's own version; damaged: the version is found by the run id"


def _sealed_store(artifacts: str, writer: str, readers: tuple[str, ...]) -> tuple[Written, ...]:
    """A store's three entries for the artifacts ``artifacts`` (a pattern): its pointer, its seal, its files."""
    return (
        Written(f"{artifacts}/latest", writer, readers, "must name one of the version folders"),
        Written(f"{artifacts}/v*/artifact.json", writer, readers, "the seal: checked whole, every file listed"),
        Written(f"{artifacts}/v*/**", writer, readers, _SEALED),
    )


WRITTEN: tuple[Written, ...] = (
    # ---- the token cache (train/tokens.py): built once, sealed by meta.json
    Written("cache/tokens/.*.lock", "tokens", (), _LOCK),
    Written("cache/tokens/*/meta.json", "tokens", ("tokens", "sae"), "the seal: checked whole; missing: rebuilt"),
    Written("cache/tokens/*/train.bin", "tokens", ("tokens", "sae"), _SEALED),
    Written("cache/tokens/*/val.bin", "tokens", ("tokens", "sae"), _SEALED),
    Written("cache/tokens/*/tokenizer.json", "tokens", ("tokens", "sae"), _SEALED),
    # ---- the activation cache (activations.py): harvested or generated once, sealed by meta.json
    Written("cache/activations/.*.lock", "sae", (), _LOCK),
    Written("cache/activations/*/meta.json", "sae", ("sae", "analysis"), "the seal: checked whole; missing: rebuilt"),
    Written("cache/activations/*/train.npy", "sae", ("sae", "analysis"), _SEALED),
    Written("cache/activations/*/val.npy", "sae", ("sae", "analysis"), _SEALED),
    # ---- the versioned store (store.py): GPTs, dictionaries, synthetic true features; each version sealed by its
    #      artifact.json, and `latest` naming one version
    Written("store/.*.lock", "store", (), _LOCK),
    Written("store/*/.lock", "store", (), _LOCK),
    *_sealed_store("store/gpt-*", "pretrain", ("sae", "pretrain")),
    *_sealed_store("store/sae-*", "sae", ("sae", "analysis", "export")),
    *_sealed_store("store/synthetic-features-*", "sae", ("sae", "analysis")),
    # ---- run folders (train/runs.py): one per run id, under a lock while a job holds it
    Written("runs/.*.lock", "runs", (), _LOCK),
    Written("runs/.*.owner.json", "runs", (), "only named in a refusal; unreadable: 'another process'"),
    Written("runs/sae-*/done.json", "runs", ("sae",), _DONE),
    Written("runs/gpt-*/done.json", "runs", ("pretrain",), _DONE),
    Written("runs/sae-*/checkpoints/last.ckpt", "trainer", ("sae",), "its sha256 in last.ckpt.sha256"),
    Written("runs/sae-*/checkpoints/last.ckpt.sha256", "trainer", ("sae",), "required beside last.ckpt"),
    Written("runs/gpt-*/checkpoints/last.ckpt", "trainer", ("pretrain",), "its sha256 in last.ckpt.sha256"),
    Written("runs/gpt-*/checkpoints/last.ckpt.sha256", "trainer", ("pretrain",), "required beside last.ckpt"),
    Written("runs/sae-*/csv/metrics.csv", "Lightning CSVLogger", ("sae",), "kept rows before a resume; copied"),
    Written("runs/gpt-*/csv/metrics.csv", "Lightning CSVLogger", ("pretrain",), "kept rows before a resume"),
    Written("runs/*/csv/hparams.yaml", "Lightning CSVLogger", (), "never read back"),
    Written("runs/*/feature_density.png", "sae", (), "written again before it is saved"),
    Written("runs/*/snapshots/*.safetensors", "sae", ("sae",), "checked when the run's snapshots are gathered"),
    Written("runs/*/snapshots.safetensors", "sae", (), "written again before it is saved"),
    Written("runs/*/lineage/*.json", "lineage", ("sync",), "checked whole"),
    # W&B's own: uploaded by `wandb sync`; a resumed job's logger reads its earlier .wandb records, and on one it
    # cannot read warns and may log a row twice (the CSV and the dictionary stay right)
    Written("runs/*/wandb/**", "wandb", ("sync",), "W&B's own; handed whole to `wandb sync`"),
    # ---- the analysis (analysis/job.py): its folder is replaced whole by each run, under a lock on paths.root itself
    # (files.folder_lock: a .lock file there only where the file system refuses that)
    Written(".lock", "analysis", (), _LOCK),
    Written(
        "analysis/.sae-sweep-output.json",
        "analysis",
        (),
        "read only by the output check (outputs.py): damaged or gone, the folder is recognised by its files or "
        "refused, never deleted",
    ),  # fmt: skip
    Written("analysis/latent_scores.csv", "analysis", ("export",), "checked against latent_scores.json"),
    Written("analysis/latent_scores.json", "analysis", ("export",), "checked whole"),
    Written("analysis/*.csv", "analysis", (), "never read back by the analysis"),
    Written("analysis/*.png", "analysis", (), "never read back"),
    Written("analysis/*.md", "analysis", (), "never read back"),
    Written("analysis/mcs.npz", "analysis", (), "never read back"),
    Written("analysis/core/*/.lock", "store", (), _LOCK),
    Written("analysis/core/.*.lock", "store", (), _LOCK),
    *_sealed_store("analysis/core/*", "analysis", ("core",)),
    # ---- Hydra's own folders: what each job ran with, read by no stage of a later run
    Written("hydra/**", "Hydra", (), "never read back"),
    Written("multirun/**", "Hydra", (), "never read back by a later run"),
)


@cache
def _regex(pattern: str) -> re.Pattern:
    escaped = re.escape(pattern).replace(r"\*\*", ".\0").replace(r"\*", "[^/]*").replace(".\0", ".*")
    return re.compile(escaped + r"\Z")


def entry_of(relative: str) -> Written | None:
    """The registry's first entry whose pattern matches ``relative`` (a POSIX path under paths.root), or None."""
    return next((w for w in WRITTEN if _regex(w.pattern).match(relative)), None)
