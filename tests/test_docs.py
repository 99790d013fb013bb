"""The documentation covers the public API."""

from __future__ import annotations

import re
from pathlib import Path

import mcpool

DOCS = Path(__file__).resolve().parent.parent / "docs"

AUTODOC = re.compile(
    r"^\.\. auto(?:class|function|exception|data)::\s+(?:mcpool\.)?(\w+)\s*$", re.M
)


def test_every_public_name_has_an_autodoc_entry() -> None:
    documented: set[str] = set()
    for page in DOCS.rglob("*.rst"):
        if "_build" not in page.parts:
            documented.update(AUTODOC.findall(page.read_text()))
    missing = sorted(set(mcpool.__all__) - documented)
    assert not missing, f"add these to docs/api.rst: {missing}"
