"""``./run.sh demo`` runs end to end: the extension serves every request
through a memcached outage, refuses the hostile key, and leaks no client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_demo_runs_every_section_and_reports_ok() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(DEMO),
            # Short phases: what is checked does not depend on their length.
            *("--threads", "4", "--size", "2", "--seconds", "0.5", "--outage", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    # The demo exits 0 only when the mcpool app answered every request (reads
    # missed and writes failed softly during the outage), the hostile key was
    # refused with the cache intact, and no client was left in use.
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for heading in ("1-2. mcpool.flask", "3. The same app", "4. A key"):
        assert heading in out
    for phase in ("running", "stopped", "restarted"):
        assert out.count(f"  {phase} ") == 2
    assert "mcpool.Client   HTTP 400: refused" in out
    assert "still holds its items" in out
    assert out.rstrip().endswith("OK")
