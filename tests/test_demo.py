"""The README's demo runs end to end and reports a healthy pool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_demo_serves_every_request_on_a_bounded_pool() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(DEMO),
            *("--threads", "8", "--requests", "400"),
            # Generous: on a busy machine memcached may answer later than the
            # default 0.25 s, and every request must succeed here.
            *("--server-timeout", "10"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "requests      400 in" in out and "errors 0" in out
    assert "  created      " in out and "  in_use       0" in out
    assert out.rstrip().endswith("OK")
