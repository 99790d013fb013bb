"""mcpool.testing: the memcached servers the tests run on."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcpool.testing import server_stats

REPO = Path(__file__).resolve().parent.parent

STARTS_TWO_SERVERS = r"""
import threading, time
from mcpool.testing import MemcachedServer

servers = [MemcachedServer().start()]
# The second from a thread that ends at once: the server must outlive the
# thread that started it, and still die with the process.
starter = threading.Thread(target=lambda: servers.append(MemcachedServer().start()))
starter.start()
starter.join()
print(*(f"{server.pid} {server.port}" for server in servers), flush=True)
time.sleep(600)
"""


def process_start(pid: int) -> str | None:
    """The start time of *pid* if it is a live process (not a zombie), else
    ``None``: a process killed after its parent died stays a zombie until
    whoever adopted it reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    state, *fields = stat.rpartition(")")[2].split()
    return None if state in {"Z", "X"} else fields[18]


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline() if ready else ""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's"
)
def test_servers_die_with_the_process_that_started_them_even_on_sigkill() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", STARTS_TWO_SERVERS],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    servers: dict[int, str | None] = {}
    try:
        line = read_line(child, 60)
        assert line, f"the child printed no pids (exit status {child.poll()})"
        numbers = [int(n) for n in line.split()]
        pids, ports = numbers[::2], numbers[1::2]
        servers = {pid: process_start(pid) for pid in pids}
        assert len(servers) == 2 and None not in servers.values()
        for port in ports:  # both answer: neither died with its starting thread
            assert "pid" in server_stats("127.0.0.1", port, timeout=10)

        child.kill()
        child.wait()
        deadline = time.monotonic() + 30
        alive = list(servers)
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if process_start(pid) == servers[pid]]
            time.sleep(0.05)
        assert alive == [], f"memcached {alive} outlived the process that started it"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
        for pid, started in servers.items():
            # Whatever the outcome, leave none of the servers behind.
            if started is not None and process_start(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
