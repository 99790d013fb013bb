"""The documentation covers the public API."""

from __future__ import annotations

import re
from pathlib import Path

import mcpool

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_public_name_is_in_the_api_reference() -> None:
    api = (DOCS / "api.rst").read_text()
    documented = set(
        re.findall(r"^\.\. auto(?:class|function|exception|data):: (\w+)", api, re.M)
    )
    missing = sorted(set(mcpool.__all__) - documented)
    assert not missing, f"add these to docs/api.rst: {missing}"
