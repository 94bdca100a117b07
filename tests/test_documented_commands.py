"""Commands that cannot rot: every ``train.py``, ``analyze.py`` and ``python -m sae_sweep...`` command the README and
the docs show is composed by Hydra and accepted by the checks its entry point makes before any work (the work itself
is not run); each module entry point answers ``--help``.

Commands are read from fenced code blocks (a line continued with a backslash is one command; ``&&`` and ``;`` split
several) and from inline code spans. A ``-m`` sweep is checked at the first value of each list (the sweep check
checks every job when it runs). Placeholders are replaced from ``PLACEHOLDERS``. Commands that need a GPU or the
network are composed but not checked further (``NEEDS``), and ``test_the_unchecked_commands_are_the_listed_ones``
lists them.
"""

from __future__ import annotations

import importlib
import re
import shlex

import pytest

from .checks import check_entry, compose_config
from .conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
PROGRAM = re.compile(  # the program (train.py, analyze.py, -m sae_sweep.<module>), then its arguments
    r"(?:^|[\s/])(?:python3?|\.venv/bin/python)\s+((?:train|analyze)\.py|-m\s+sae_sweep(?:\.\w+)+)(.*)$"
)
PLACEHOLDERS = {  # what a placeholder stands for, in a command that would otherwise not parse
    "<sweep>": "sae.dict_size=256,512",
    "<name>": "demo",
    "<its variant>": "synthetic-l1-0.005",
}
NEEDS = {  # a setting that needs what this machine lacks -> what
    "trainer=gpu": "a GPU",
    "trainer=ddp": "GPUs",
    "data=openwebtext": "the network",
    "source=wandb": "the network",
}


def documented() -> list[tuple[str, str, str]]:
    """(document, program, arguments) of every command shown, in order."""
    found = []
    for doc in DOCUMENTS:
        fenced, spans, inside = [], [], False
        for line in doc.read_text().splitlines():
            if line.strip().startswith("```"):
                inside = not inside
            elif inside:
                fenced.append(line)
            else:
                spans += re.findall(r"`([^`]+)`", line)
        for line in "\n".join(fenced).replace("\\\n", " ").splitlines() + spans:
            for part in re.split(r"&&|;", line):
                if m := PROGRAM.search(part.strip()):
                    found.append((doc.name, re.sub(r"\s+", " ", m.group(1)), m.group(2).strip()))
    return found


def overrides(args: str) -> tuple[list[str], bool]:
    """The overrides of a command's arguments (placeholders filled, comments and flags dropped, each list at its first
    value) and whether it asked for --help."""
    for placeholder, value in PLACEHOLDERS.items():
        args = args.replace(placeholder, value)
    words = shlex.split(args, comments=True)
    kept = []
    for w in words:
        if w in ("-m", "--multirun"):
            continue
        if w.startswith("-"):
            return kept, True  # --help, --cfg job: Hydra's own flags, answered before any config is checked
        key, _, value = w.partition("=")
        kept.append(f"{key}={value.split(',')[0]}" if "," in value and not value.startswith("[") else w)
    return kept, False


COMMANDS = documented()
HYDRA = [(doc, prog, args) for doc, prog, args in COMMANDS if prog.endswith(".py")]
MODULES = sorted({prog.split()[-1] for _, prog, _ in COMMANDS if prog.startswith("-m")})


@pytest.mark.parametrize(("doc", "prog", "args"), HYDRA, ids=[f"{d}:{p} {a}"[:80] for d, p, a in HYDRA])
def test_each_documented_command_composes_and_passes_the_checks_made_before_work(doc, prog, args):
    kept, asked_help = overrides(args)
    if asked_help:
        return
    name = prog.removesuffix(".py")
    cfg = compose_config(name, kept)  # an unknown key, group option or value fails here
    if not any(setting in kept for setting in NEEDS):
        check_entry(name, cfg, machine=False)  # the checks before any work (the machine's own left to it)


@pytest.mark.parametrize("module", MODULES)
def test_each_documented_module_answers_help(module, capsys):
    with pytest.raises(SystemExit) as ended:
        importlib.import_module(module).main(["--help"])
    assert ended.value.code == 0 and "usage:" in capsys.readouterr().out


def test_the_unchecked_commands_are_the_listed_ones():
    """What needs a GPU or the network is composed but not checked: listed here, so a new one is seen."""
    unchecked = sorted({args for _, _, args in HYDRA if any(s in overrides(args)[0] for s in NEEDS)})
    assert len(COMMANDS) >= 30 and set(MODULES) >= {"sae_sweep.sync", "sae_sweep.interop.export"}
    assert unchecked == [
        "-m hydra/launcher=slurm experiment=bimodal trainer=ddp trainer.devices=4   # 4 GPUs per job",
        "-m hydra/launcher=slurm experiment=bimodal trainer=gpu hydra.launcher.partition=gpu",
        "stage=pretrain trainer=gpu",
    ], unchecked


def test_a_command_altered_to_a_wrong_key_fails_the_check():
    """The check can fail: the README's first sweep with a misspelt key, and with a value out of range."""
    from hydra.errors import ConfigCompositionException  # noqa: PLC0415

    from sae_sweep.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigCompositionException):
        compose_config("train", overrides("-m sae.dict_sise=256,512 sae.seed=0,1")[0])
    with pytest.raises(ConfigError, match="sae.dict_size"):
        check_entry("train", compose_config("train", overrides("-m sae.dict_size=0,512")[0]), machine=False)


def test_the_configuration_reference_is_the_configuration():
    """docs/configuration.md is what sae_sweep.config_docs writes now, and every key of the composed default configs
    (and of every option of the groups they compose) has an entry there, with its default."""
    from omegaconf import OmegaConf  # noqa: PLC0415

    from sae_sweep.config_docs import entries, render  # noqa: PLC0415

    items = list(entries())
    page = REPO / "docs" / "configuration.md"
    assert page.read_text() == render(items), "regenerate it: python -m sae_sweep.config_docs > docs/configuration.md"
    documented = {e.key for e in items}

    def leaves(node, prefix=""):
        for k, v in node.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]

    for name in ("train", "analyze"):
        composed = OmegaConf.to_container(compose_config(name, []), resolve=False)
        missing = sorted(set(leaves(composed)) - documented)
        assert not missing, f"{name}: keys with no entry in the reference: {missing}"
