"""The GPT shipped with sae-sweep: the default pretraining's product, taken ready made instead of remade.

``sae_sweep/ready_made/<run id>/`` holds what this project's own ``python train.py stage=pretrain ready_made=false``
made on the embedded corpus with the default settings: ``model.safetensors`` (0.21M parameters, 857 kB),
``config.json`` (as the store's GPT folder has it: the model, and how it was trained) and ``made.json`` (the command,
commit, date, machine and the weights' sha256). A pretraining run whose run id (corpus tokens, model, recipe, world
size: ``pretrain.run_id``) names such a folder installs it into the store instead of training (about 7 minutes on
2 cores), after two checks:

- the weights' sha256 is the one recorded (a damaged package is an error, not a silent different GPT);
- the validation loss measured here, on this machine's token cache, equals the recorded one to 1e-4 nats/token
  (else the GPT is trained after all, with a warning saying why).

The tokenizer and data.json come from the local token cache, as a trained GPT's do, so the installed folder is the
one training would have written; its metadata says ``ready_made``. Package a new one (after a change of recipe) with

    python train.py stage=pretrain ready_made=false
    python -m sae_sweep.train.ready_made sae_sweep_out/store/gpt-embedded-s0/latest
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

from sae_sweep.errors import DataError
from sae_sweep.files import sha256_file
from sae_sweep.train.gpt import GPT, MODEL_CONFIG_FILE, WEIGHTS_FILE, GPTConfig

log = logging.getLogger(__name__)

HOME = Path(__file__).resolve().parent.parent / "ready_made"
MADE_FILE = "made.json"
VAL_TOLERANCE = 1e-4  # nats/token: the same weights and tokens give the same loss to ~1e-7 across runs here


def find(run_id: str, home: Path | None = None) -> Path | None:
    """The shipped GPT made by pretraining run ``run_id``, if there is one (under ``home``, default ``HOME``)."""
    folder = (home or HOME) / run_id
    return folder if (folder / MADE_FILE).is_file() else None


def load(folder: Path) -> tuple[GPT, dict, dict]:
    """The shipped GPT (checked against its recorded sha256), its config.json and its made.json."""
    from safetensors.torch import load_model  # noqa: PLC0415

    made = json.loads((folder / MADE_FILE).read_text())
    digest = sha256_file(folder / WEIGHTS_FILE)
    if digest != made["sha256"]:
        raise DataError(
            f"the ready-made GPT at {folder} is damaged: {WEIGHTS_FILE} has sha256 {digest[:12]}..., "
            f"made.json records {made['sha256'][:12]}.... Reinstall sae-sweep, or train the GPT here with "
            "`python train.py stage=pretrain ready_made=false`"
        )
    config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    model = GPT(GPTConfig(**config["model"]))
    load_model(model, str(folder / WEIGHTS_FILE))
    return model.eval(), config, made


def usable(folder: Path, measured_val: float, recorded_val: float) -> bool:
    """Whether the validation loss measured here matches the one recorded when the GPT was made."""
    if abs(measured_val - recorded_val) <= VAL_TOLERANCE:
        return True
    log.warning(
        "the ready-made GPT %s has validation loss %.6f here against %.6f recorded when it was made: this machine's "
        "token cache differs from the one it was trained on; training the GPT instead",
        folder.name,
        measured_val,
        recorded_val,
    )
    return False


def package(artifact: Path, home: Path | None = None, commit: str | None = None) -> Path:
    """Copy a trained GPT's store folder into the package as ``<run id>/``, with a made.json saying how it was made."""
    config = json.loads((artifact / MODEL_CONFIG_FILE).read_text())
    train, home = config["train"], home or HOME
    if train.get("untrained") or train.get("ready_made"):
        raise DataError(f"{artifact} is not a GPT this machine trained; package one made by stage=pretrain")
    dest = home / train["run_id"]
    tmp = home / f".tmp-{train['run_id']}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in (WEIGHTS_FILE, MODEL_CONFIG_FILE):
        shutil.copyfile(artifact / name, tmp / name)
    made = {
        "command": "python train.py stage=pretrain ready_made=false",
        "commit": commit or _commit(),
        "made": time.strftime("%Y-%m-%d", time.gmtime((artifact / WEIGHTS_FILE).stat().st_mtime)),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "sha256": sha256_file(artifact / WEIGHTS_FILE),
        "val_loss": train["val_loss"],
    }
    (tmp / MADE_FILE).write_text(json.dumps(made, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HOME, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", type=Path, help="a trained GPT's folder in the store (store/gpt-.../vN or latest)")
    ap.add_argument("--commit", help="the commit that trained it (default: this checkout's HEAD)")
    args = ap.parse_args()
    dest = package(args.artifact.resolve(), commit=args.commit)
    print(f"packaged {args.artifact} as {dest}")


if __name__ == "__main__":
    main()
