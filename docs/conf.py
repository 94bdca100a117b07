"""Sphinx configuration of the documentation site: Markdown pages through MyST, the API reference from docstrings.

Build it (warnings are errors, as in CI): .venv/bin/pip install -c constraints.txt -e '.[docs]' &&
.venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html
"""

project = "sae-sweep"
author = "the sae-sweep developers"
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # links to a page's sections: [text](page.md#section-title)
autodoc_typehints = "description"  # the signature stays short; types go beside each parameter
autodoc_member_order = "bysource"
html_theme = "alabaster"
html_title = "sae-sweep"
