"""The training-budget axis: the decoder saved at every doubling of the activations an SAE has seen.

With ``sae.snapshot_first = A > 0`` (activations), the SAE's state is recorded after the steps at which it has seen
A, 2A, 4A, ... activations (``snapshot_steps``), for every budget its run reaches before it ends, and at its end
(the dictionary itself); step 0 is the dictionary's ``decoder_init``. A snapshot holds the decoder (d_in, J), the
held-out firing count of each feature on the ``sae.eval_rows`` evaluation rows, and the held-out metrics then.

During training each snapshot is one file ``<run>/snapshots/<steps>.safetensors``, written under a temporary name
and renamed, so a killed run leaves whole files only; a resumed run rewrites the same bytes (resume is exact). The
stage takes one more of the final state, so that every point of the axis counts firing on the same rows.
``gather`` folds those of the finished run into the dictionary's ``snapshots.safetensors`` (tensors
``decoder.<steps>`` and ``fired.<steps>``) and the list of their metrics that config.json keeps in
``training.snapshots``. A fixed-budget run ending at step s is in the state a longer run's snapshot at s records.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from sae_sweep.dictionary import SNAPSHOTS_FILE  # noqa: F401 - the dictionary folder's file, named there
from sae_sweep.errors import DataError
from sae_sweep.train.convergence import evaluate_with_counts

log = logging.getLogger(__name__)

SNAPSHOT_DIR = "snapshots"  # in the run folder, while training


def snapshot_steps(first: int, global_batch: int, n_steps: int) -> list[int]:
    """Steps (1 <= s < n_steps) after which the activations seen, s x global_batch, first reach first x 2^k."""
    if first <= 0:
        return []
    steps, budget = [], first
    while (s := -(-budget // global_batch)) < n_steps:  # ceil: the first step that has seen the budget
        if not steps or s > steps[-1]:
            steps.append(s)
        budget *= 2
    return steps


@torch.no_grad()
def take(sae, held_out: torch.Tensor, l1_coeff: float, steps: int, global_batch: int, folder: Path) -> Path:
    """Write the snapshot after ``steps`` steps into ``folder`` (atomically); returns its path."""
    from safetensors.torch import save_file  # noqa: PLC0415

    ev, fired = evaluate_with_counts(sae, held_out, l1_coeff, None, steps)  # fired: (J,) rows each feature fired on
    meta = {
        "steps": steps,
        "activations_seen": steps * global_batch,
        **{k: getattr(ev, k) for k in ("loss", "mse", "fvu", "l0", "dead_fraction")},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{steps:09d}.safetensors"
    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {"decoder": sae.decoder.detach().cpu().contiguous(), "fired": fired.cpu().to(torch.int64)}
    save_file(tensors, str(tmp), metadata={"snapshot": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def clear(folder: Path) -> None:
    """Forget a previous attempt's snapshots (a run starting from step 0)."""
    for path in folder.glob("*.safetensors") if folder.is_dir() else ():
        path.unlink()


def gather(folder: Path, final_steps: int, out: Path, expected: Iterable[int] = ()) -> list[dict] | None:
    """Fold the snapshots taken up to ``final_steps`` into one file ``out``; their metrics, oldest first.

    None (and no file) when the run took none. A snapshot file that cannot be read is refused by name; one of the
    ``expected`` steps that is missing (deleted) is said, and recorded in its place as ``{"steps": s, "missing":
    true}``, so that the dictionary says which of its budget axis's points it lacks.
    """
    from safetensors import SafetensorError, safe_open  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    metas, tensors = [], {}
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else ():
        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads(f.metadata()["snapshot"])
                if meta["steps"] > final_steps:  # a longer earlier attempt's
                    continue
                tensors[f"decoder.{meta['steps']}"] = f.get_tensor("decoder")
                tensors[f"fired.{meta['steps']}"] = f.get_tensor("fired")
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"snapshot {path} is damaged ({type(exc).__name__}: {str(exc)[:80]}): delete it (the dictionary is "
                "then saved without that point, and says so), or rerun with force=true to train the run again"
            ) from None
        metas.append(meta)
    for step in sorted(set(expected) - {m["steps"] for m in metas}):
        log.warning("the snapshot after step %d is missing from %s (deleted?): the dictionary records it as missing",
                    step, folder)  # fmt: skip
        metas.append({"steps": step, "missing": True})
    metas.sort(key=lambda m: m["steps"])
    if not tensors:
        return None
    save_file(tensors, str(out))
    return metas
