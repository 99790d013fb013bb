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


def test_every_deployment_guide_names_a_test_that_exists() -> None:
    # Each guide says "Tested by tests/test_deployment.py -k NAME": NAME must
    # select a test, or the guide claims a backing it does not have.
    import test_deployment

    ids = {deployment.name for deployment in test_deployment.DEPLOYMENTS}
    tests = {name for name in dir(test_deployment) if name.startswith("test_")}
    guides = sorted((DOCS / "deployment").glob("*.rst"))
    assert guides
    for guide in guides:
        for name in re.findall(r"-k ([\w-]+)", guide.read_text()):
            assert name in ids or any(name in test for test in tests), (
                f"{guide.name} names '-k {name}', which selects no test"
            )
    named = {
        name
        for guide in guides
        for name in re.findall(r"-k ([\w-]+)", guide.read_text())
    }
    assert ids <= named, f"deployments no guide names: {sorted(ids - named)}"
