"""Importing mcpool without the pylibmc module says what to install."""

from __future__ import annotations

import subprocess
import sys

# None in sys.modules makes "import pylibmc" raise ImportError, as it does
# where neither distribution is installed.
WITHOUT_PYLIBMC = """
import sys
sys.modules["pylibmc"] = None
import mcpool.clientpool
"""


def test_missing_pylibmc_names_both_extras() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYLIBMC],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: mcpool needs the module pylibmc")
    assert "pip install mcpool[pylibmc]" in last_line
    assert "libmemcached-dev zlib1g-dev" in last_line
    assert "pip install mcpool[pylibmc2]" in last_line
    assert "CPython 3.10-3.14" in last_line
