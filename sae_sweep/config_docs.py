"""The configuration reference, generated from the configuration:

    python -m sae_sweep.config_docs > docs/configuration.md

``entries`` is the one accessor: every key of ``conf/`` (train.yaml, analyze.yaml, and every option of every group)
as (where, key, default, reason), the reason being the key's YAML comment (continued on the comment lines below it).
``render`` writes them as one Markdown page, a table per file. ``tests/test_documented_commands.py`` holds the page
to the configuration: the page must be what ``render`` writes now, and every key of the composed configs must have
an entry. Where the reasons move (beside the dataclass fields, say), only ``entries`` changes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "conf"
_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[\w.\-/]+):(?:\s+(?P<value>[^#]*?))?\s*(?:#\s?(?P<reason>.*))?$")
# a reason continued below its key: an indented comment line, or one whose text is indented past its "#"
_MORE = re.compile(r"^(?:\s+#\s?|#\s{2,})(?P<reason>.*)$")


@dataclass(frozen=True)
class Entry:
    where: str  # the file: "train.yaml", or a group's option as chosen on the command line ("sae=default")
    key: str  # the full key, as overridden on the command line ("sae.dict_size")
    default: str  # the value in the file, as written ("" for a section)
    reason: str  # its comment


def files(conf: Path = CONF) -> Iterator[tuple[str, Path, str]]:
    """(where, path, key prefix) of every config file: the two entry points', then each group option's."""
    yield "train.yaml", conf / "train.yaml", ""
    yield "analyze.yaml", conf / "analyze.yaml", ""
    for path in sorted(conf.rglob("*.yaml")):
        group = path.parent.relative_to(conf).as_posix()
        if group == ".":
            continue
        glob = path.read_text().startswith("# @package _global_")
        yield f"{group}={path.stem}", path, "" if glob else group.replace("/", ".") + "."


def entries(conf: Path = CONF) -> Iterator[Entry]:
    """Every key of every config file, with its default and its reason (module docstring)."""
    for where, path, prefix in files(conf):
        yield from _read(path.read_text().splitlines(), where, prefix)


def _read(lines: list[str], where: str, prefix: str) -> Iterator[Entry]:
    stack: list[tuple[int, str]] = []  # (indent, key) of the open sections
    last: Entry | None = None
    text_under = None  # the indent of a key whose value is a block of text (|, >): its lines are not keys
    for line in lines:
        if text_under is not None and (not line.strip() or len(line) - len(line.lstrip()) > text_under):
            continue
        text_under = None
        more = _MORE.match(line)
        if more and last is not None:  # the comment goes on below the key it belongs to
            last = Entry(last.where, last.key, last.default, f"{last.reason} {more['reason'].strip()}".strip())
            continue
        if last is not None:
            yield last
            last = None
        m = _KEY.match(line)
        if m is None or line.lstrip().startswith(("#", "-")):
            continue
        indent = len(m["indent"])
        stack = [(i, k) for i, k in stack if i < indent]
        key = ".".join([k for _, k in stack] + [m["key"]])
        if key == "defaults" or key.startswith("defaults."):
            continue
        value = (m["value"] or "").strip()
        if not value:
            stack.append((indent, m["key"]))
        elif value in ("|", "|-", ">", ">-"):
            text_under, value = indent, "(text)"
        last = Entry(where, prefix + key, value, (m["reason"] or "").strip())
    if last is not None:
        yield last


def render(items: list[Entry]) -> str:
    """The Markdown page: a table per file, in ``files`` order."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `conf/` by `python -m sae_sweep.config_docs > docs/configuration.md` (the test suite fails",
        "when this page and the configuration disagree). Each key with its default and the reason its YAML comment",
        "gives; a group's option is chosen as `group=option` and its keys are overridden as `group.key=value`.",
    ]
    where = None
    for e in items:
        if e.where != where:
            where = e.where
            out += ["", f"## `{where}`", "", "| key | default | why |", "| --- | --- | --- |"]
        cells = [f"`{e.key}`", f"`{e.default}`" if e.default else "(section)", e.reason]
        out.append("| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415

    ap = argparse.ArgumentParser(
        prog="python -m sae_sweep.config_docs",
        description="Print the configuration reference (every key of conf/ with its default and reason) as Markdown: "
        "python -m sae_sweep.config_docs > docs/configuration.md",
    )
    ap.parse_args(argv)
    sys.stdout.write(render(list(entries())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
