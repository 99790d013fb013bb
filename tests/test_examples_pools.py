"""The generic-pool examples run as their users would run them, and pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ftp_pool_downloads_every_file_within_the_server_limit() -> None:
    result = run_example("ftp_pool.py")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # Without a pool, the per-user limit refuses 17 of 20 logins.
    assert "17 x 421 Too many sessions for reader (at most 3)." in out
    assert "ok   100 of 100 files verified by SHA-256" in out
    assert "ok   at most 3 connections (3)" in out
    # Connections the server dropped while idle fail the NOOP check.
    assert "NOOP found 3 dropped connections; 3 new ones made" in out
    assert "ok   the connection went back to the pool" in out
    assert "ok   QUIT ended every session on the server" in out
    assert out.rstrip().endswith("all checks passed")
    assert "FAIL" not in out


def test_ftp_pool_refuses_a_pool_larger_than_the_server_allows() -> None:
    result = run_example("ftp_pool.py", "--pool-size", "4", "--user-limit", "3")
    assert result.returncode == 2
    assert "--pool-size must not exceed --user-limit" in result.stderr


def test_dbapi_pool_on_sqlite3_keeps_the_books_and_times_out_clearly() -> None:
    result = run_example("dbapi_pool.py", "--transfers", "200")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "SQLite objects created in a thread can only be used in that same" in out
    assert "ok   the total is still 10000" in out
    assert "ok   the uncommitted update was rolled back on return" in out
    assert "ok   the half-done transfer left nothing" in out
    assert "ok   4 of 4 connections could write afterwards" in out
    assert "dbapi: couldn't reserve an item after" in out
    assert "(size=4, max_size=4, in_use=4, idle=0, waiting=0)" in out
    assert "ok   a released connection went to the waiting caller" in out
    assert "ok   a constraint violation keeps the connection" in out
    assert "ok   a closed connection is replaced" in out
    assert out.rstrip().endswith("all checks passed")
    assert "FAIL" not in out
