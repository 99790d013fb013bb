"""mypy sees mcpool's types: pools generic over their clients, a typed
Flask extension, and an installed package it can find."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
USAGE = ROOT / "tests" / "typing" / "usage.py"
EXPECTED_ERROR = re.compile(r"  # type: ignore\[([\w-]+)\]$")

pytest.importorskip("mypy", reason="mypy is a dev dependency: pip install -e '.[dev]'")


def run_mypy(source: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # From a directory outside the repository, without its mypy config: mcpool
    # is found the way an application's mypy finds it, as an installed
    # package. The repository's cache keeps the second run quick.
    return subprocess.run(
        [
            sys.executable,
            *("-m", "mypy", "--strict", "--python-version", "3.10"),
            *("--config-file", "", "--cache-dir", str(ROOT / ".mypy_cache")),
            *("--no-error-summary", "--show-error-codes", str(source)),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_usage_file_type_checks(tmp_path: Path) -> None:
    # Every assert_type holds and every "type: ignore[code]" covers an error
    # (--strict reports an ignore that covers none).
    result = run_mypy(USAGE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_wrong_uses_are_errors(tmp_path: Path) -> None:
    # Without the ignores, mypy reports each marked line, with its code, and
    # nothing else.
    lines = USAGE.read_text().splitlines()
    expected = {
        (number, match.group(1))
        for number, line in enumerate(lines, 1)
        if (match := EXPECTED_ERROR.search(line))
    }
    assert len(expected) >= 7
    bare = tmp_path / "usage.py"
    bare.write_text("\n".join(EXPECTED_ERROR.sub("", line) for line in lines) + "\n")
    result = run_mypy(bare, tmp_path)
    reported = {
        (int(number), code)
        for number, code in re.findall(
            r"^usage\.py:(\d+): error: .*\[([\w-]+)\]$", result.stdout, re.M
        )
    }
    assert reported == expected, result.stdout + result.stderr


def test_install_guide_typing_example(tmp_path: Path) -> None:
    # The docs' example type-checks as its comments say: the one misspelt
    # method is the one error.
    text = (ROOT / "docs" / "install.rst").read_text()
    section = text[text.index("Type checking\n") :]
    block = re.search(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", section)
    assert block is not None
    code = "\n".join(line[4:] for line in block.group(1).splitlines())
    example = tmp_path / "example.py"
    example.write_text(f"import pylibmc\n\nimport mcpool\n\n{code}\n")
    result = run_mypy(example, tmp_path)
    errors = re.findall(r"^example\.py:(\d+): error: (.*)$", result.stdout, re.M)
    lines = example.read_text().splitlines()
    assert [(lines[int(n) - 1].strip(), message) for n, message in errors] == [
        (
            'mc.gett("k")              # mypy: "Client" has no attribute "gett"',
            '"Client" has no attribute "gett"; maybe "get"?  [attr-defined]',
        )
    ], result.stdout + result.stderr
