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


def assert_lines(out: str, *lines: str) -> None:
    """Each line appears in the example's output; show the output if not."""
    missing = [line for line in lines if line not in out]
    assert not missing, f"missing {missing} in:\n{out}"
    assert "FAIL" not in out, out
    assert out.rstrip().endswith("all checks passed"), out


def test_ftp_pool_downloads_every_file_within_the_server_limit() -> None:
    result = run_example("ftp_pool.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_lines(
        result.stdout,
        # Without a pool, the per-user limit refuses 17 of 20 logins.
        "17 x 421 Too many sessions for reader (at most 3).",
        "ok   100 of 100 files verified by SHA-256",
        "ok   at most 3 connections (3)",
        # Connections the server dropped while idle fail the NOOP check.
        "NOOP found 3 dropped connections; 3 new ones made",
        "ok   the connection went back to the pool",
        "ok   QUIT ended every session on the server",
    )


def test_ftp_pool_refuses_a_pool_larger_than_the_server_allows() -> None:
    result = run_example("ftp_pool.py", "--pool-size", "4", "--user-limit", "3")
    assert result.returncode == 2
    assert "--pool-size must not exceed --user-limit" in result.stderr


def test_dbapi_pool_on_sqlite3_keeps_the_books_and_times_out_clearly() -> None:
    result = run_example("dbapi_pool.py", "--transfers", "200")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_lines(
        result.stdout,
        "SQLite objects created in a thread can only be used in that same thread",
        "ok   the total is still 10000",
        "ok   the uncommitted update was rolled back on return",
        "ok   the half-done transfer left nothing",
        "ok   4 of 4 connections could write afterwards",
        "dbapi: couldn't reserve an item after",
        "(size=4, max_size=4, in_use=4, idle=0, waiting=0)",
        "ok   a released connection went to the waiting caller",
        "ok   a constraint violation keeps the connection",
        "ok   a closed connection is replaced",
    )
