"""The README is a front page: at most 200 lines, and every link in it leads somewhere in the repository.

Links into the documentation site are checked by its strict build in CI (``.ci/run``); this checks the README, which
the site does not build. Web links (the note) are not fetched: tests make no network calls."""

import re

from .conftest import REPO

README = REPO / "README.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def slug(heading: str) -> str:
    """A heading's anchor as GitHub and MyST (myst_heading_anchors) write it: lower case, punctuation dropped,
    spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page) -> set[str]:
    fence, found = False, set()
    for line in page.read_text().splitlines():
        fence ^= line.startswith("```")
        if not fence and (m := re.match(r"^#{1,6} (.+)$", line)):
            found.add(slug(m.group(1)))
    return found


def broken_links(text: str, base) -> list[str]:
    bad = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        file = base / path if path else README
        if not file.is_file():
            bad.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            bad.append(f"{target}: no heading with that anchor")
    return bad


def test_the_readme_is_a_front_page_of_at_most_200_lines():
    assert len(README.read_text().splitlines()) <= 200


def test_every_link_and_image_of_the_readme_is_in_the_repository():
    text = README.read_text()
    assert len(LINK.findall(text)) >= 10  # the docs table, the figure, the note
    assert broken_links(text, REPO) == []


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "page.md").write_text("# A page\n\n## Its section, here\n\n```\n# not a heading\n```\n")
    text = "[ok](page.md) [ok](page.md#its-section-here) [gone](nope.md) [bad](page.md#not-a-heading) ![x](a.png)"
    assert broken_links(text, tmp_path) == [
        "nope.md: no such file",
        "page.md#not-a-heading: no heading with that anchor",
        "a.png: no such file",
    ]
