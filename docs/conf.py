"""Sphinx configuration for mcpool's documentation.

Build it with ``python -m sphinx -W -b html docs docs/_build/html`` (the test
command does, with warnings as errors).
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

sys.path.insert(0, os.path.abspath(".."))

project = "mcpool"
author = "mcpool contributors"
copyright = "the mcpool contributors"
try:
    release = _installed_version("mcpool")
except PackageNotFoundError:  # building from a checkout that is not installed
    release = "dev"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# The API reference documents every public name once, under ``mcpool``.
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
add_module_names = False

myst_heading_anchors = 2

html_theme = "furo"
html_title = "mcpool"
html_static_path = ["_static"]
html_show_sourcelink = False
