"""Server addresses, probes, and each client's view of its servers' health."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import mcpool
from mcpool.servers import ServerHealth, parse_server, probe
from mcpool.testing import MemcachedServer, free_port

# Generous: the probe thread runs on a loaded machine.
EVENTUALLY = 60.0


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + EVENTUALLY
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


class BlackHole:
    """A TCP server that accepts connections, records what it is sent and
    never answers: a hung memcached that can tell what reached it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.received = bytearray()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._open.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.received += data

    def seen(self) -> bytes:
        with self._lock:
            return bytes(self.received)

    def close(self) -> None:
        # Wakes the accept(): closing alone does not, on Linux.
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join()
        for conn in self._open:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


# -- addresses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "address", "port", "weight"),
    [
        ("cache", "cache:11211", 11211, 1),
        ("10.0.0.1:11212", "10.0.0.1:11212", 11212, 1),
        ("10.0.0.1:11212:3", "10.0.0.1:11212", 11212, 3),
        ("[::1]", "[::1]:11211", 11211, 1),
        ("[::1]:11300:2", "[::1]:11300", 11300, 2),
        ("tcp:cache:1", "cache:1", 1, 1),
        ("/run/memcached.sock", "/run/memcached.sock", None, 1),
    ],
)
def test_addresses_are_read_as_pylibmc_reads_them(
    spec: str, address: str, port: int | None, weight: int
) -> None:
    server = parse_server(spec)
    assert (server.address, server.port, server.weight) == (address, port, weight)


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("localhost:abc", "the port 'abc'"),
        ("localhost:0", "the port '0'"),
        ("localhost:70000", "the port '70000'"),
        ("localhost:11211:x", "the weight 'x'"),
        ("::1", "IPv6 address goes in brackets"),
        ("fe80::1:2", "too many ':'"),
        ("[::1", "closing bracket"),
        ("[::1]x", "closing bracket"),
        (":11211", "no host"),
        ("", "empty"),
        (" localhost", "spaces"),
        ("local host:1", "a space in the host"),
    ],
)
def test_a_bad_address_is_refused_naming_it(spec: str, names: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_server(spec)
    assert repr(spec) in str(info.value)
    assert names in str(info.value)
    assert '"host:port"' in str(info.value)


def test_client_refuses_a_bad_address_before_pylibmc_does(
    memcached: MemcachedServer,
) -> None:
    with pytest.raises(
        ValueError, match=r"'localhost:abc'.*port 'abc' is not a number"
    ):
        mcpool.Client([memcached.address, "localhost:abc"])
    with pytest.raises(TypeError, match="a list of addresses"):
        mcpool.Client(memcached.address)
    with pytest.raises(ValueError, match="no memcached servers"):
        mcpool.Client([])
    mc = mcpool.Client([memcached.address], timeout=10)
    assert mc.set("servers:next", 1)
    assert mc.get("servers:next") == 1


# -- probes ------------------------------------------------------------------


def test_probe_tells_an_answering_server_from_a_missing_one(
    fresh_memcached: MemcachedServer,
) -> None:
    assert probe(fresh_memcached.address, 10.0) is None
    assert probe(fresh_memcached.address, 10.0, binary=True) is None
    assert probe(f"127.0.0.1:{free_port()}", 10.0) == "connection refused"
    fresh_memcached.pause()
    try:
        assert probe(fresh_memcached.address, 0.2) == "no answer within 0.2 s"
    finally:
        fresh_memcached.resume()
    assert probe(fresh_memcached.address, 10.0) is None


# -- health ------------------------------------------------------------------


def test_no_probe_runs_while_every_server_answers(memcached: MemcachedServer) -> None:
    mc = mcpool.Client([memcached.address], timeout=10)
    for i in range(20):
        mc.set(f"servers:quiet:{i}", i)
        assert mc.get(f"servers:quiet:{i}") == i
    assert mc.health._prober is None
    (state,) = mc.health.snapshot()
    assert (state.address, state.available, state.unavailable, state.ejections) == (
        memcached.address,
        True,
        0,
        0,
    )


def test_a_server_that_goes_and_comes_back_is_logged_once_each_way(
    fresh_memcached: MemcachedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcpool.servers")
    pool = mcpool.ClientPool(mcpool.Client([fresh_memcached.address], timeout=10), 8)
    with pool.reserve() as mc:
        assert mc.set("servers:back", "v")
    fresh_memcached.kill()

    def requests(n: int) -> list[object]:
        results: list[object] = []

        def work() -> None:
            for _ in range(n):
                with pool.reserve() as mc:
                    results.append(mc.get("servers:back"))

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    assert requests(25) == [None] * 200
    eventually(lambda: not pool.stats().servers[0].available)
    assert requests(25) == [None] * 200
    (down,) = pool.stats().servers
    assert down.ejections == 1
    assert down.unavailable >= 1
    assert "refused" in down.error

    fresh_memcached.start()
    eventually(lambda: pool.stats().servers[0].available)
    # A client of its own: the pool's clones each wait out libmemcached's
    # retry timeout before they try the server again.
    assert mcpool.Client([fresh_memcached.address], timeout=10).set(
        "servers:back", "again"
    )
    # Each clone retries the server on its own schedule (libmemcached's
    # retry and dead timeouts), so misses may go on for a few seconds.
    eventually(lambda: requests(25) == ["again"] * 200)

    lines = [r for r in caplog.records if r.name == "mcpool.servers"]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.INFO]
    assert all(fresh_memcached.address in r.getMessage() for r in lines)
    assert "is unavailable: connection refused" in lines[0].getMessage()
    assert "answers again after" in lines[1].getMessage()
    (up,) = pool.stats().servers
    assert (up.available, up.ejections, up.error) == (True, 1, "")


def stored(mc: mcpool.Client, key: str) -> bool:
    try:
        return mc.set(key, 1)
    except mcpool.ServerUnavailable:
        return False


def test_requests_fail_fast_while_no_server_answers(black_hole: BlackHole) -> None:
    mc = mcpool.Client([black_hole.address], timeout=0.1)
    # A write, not a read: a read that times out is a plain miss to pylibmc
    # (libmemcached 1.0.18 never reports it at all), while a write that
    # times out raises on every build, and starts the probe.
    eventually(lambda: not stored(mc, "servers:first") and mc.health.all_down)
    # From now on nothing reaches the server: reads miss, writes raise.
    before = black_hole.seen()
    assert b"servers:first" in before
    assert mc.get("servers:fast") is None
    assert mc.get("servers:fast", "default") == "default"
    assert mc.gets("servers:fast") == (None, None)
    assert mc.get_multi(["servers:fast", "servers:fast2"]) == {}
    with pytest.raises(
        mcpool.ServerUnavailable, match="no server of this client answers"
    ):
        mc.set("servers:fast", 1)
    with pytest.raises(mcpool.ServerUnavailable) as info:
        mc.set_multi({"servers:fast": 1, "servers:fast2": 2})
    assert info.value.keys == ["servers:fast", "servers:fast2"]
    with pytest.raises(mcpool.ServerUnavailable):
        mc.delete("servers:fast")
    with pytest.raises(mcpool.ServerUnavailable):
        mc.incr("servers:fast")
    with pytest.raises(mcpool.ServerUnavailable):
        mc.delete_multi(["servers:fast"])
    assert b"servers:fast" not in black_hole.seen()
    (state,) = mc.health.snapshot()
    assert not state.available
    assert state.unavailable >= 9
    assert state.error.startswith("no answer within")


def test_one_server_down_of_two_does_not_fail_fast(
    memcached: MemcachedServer,
) -> None:
    missing = f"127.0.0.1:{free_port()}"
    mc = mcpool.Client([memcached.address, missing], timeout=10)
    keys = [f"servers:half:{i}" for i in range(40)]
    for key in keys:
        try:
            mc.set(key, key)
        except mcpool.ServerUnavailable:
            pass
    eventually(lambda: not mc.health.snapshot()[1].available)
    up, down = mc.health.snapshot()
    assert (up.available, down.available) == (True, False)
    assert not mc.health.all_down
    assert up.unavailable == 0
    assert down.unavailable >= 1
    # The live server still answers for its keys.
    assert mc.get_multi(keys)


FORK_SCRIPT = """
import os, socket, sys, time
import mcpool

# A listener that never accepts: the kernel completes each connection and
# nothing ever answers, like a paused server.
hole = socket.create_server(("127.0.0.1", 0), backlog=64)
mc = mcpool.Client(["127.0.0.1:%d" % hole.getsockname()[1]], timeout=0.1)
deadline = time.monotonic() + float(sys.argv[1])
# A write: a read that times out is a plain miss, which libmemcached 1.0.18
# never reports.
while not mc.health.all_down:
    try:
        mc.set("servers:fork", 1)
    except mcpool.ServerUnavailable:
        pass
    assert time.monotonic() < deadline, "never found down"
    time.sleep(0.01)
pid = os.fork()  # a probe thread may be running: the child must not mind
if pid == 0:
    (state,) = mc.health.snapshot()
    fresh = state.available and not mc.health.all_down and state.ejections == 0
    os._exit(0 if fresh else 1)
code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(code, mc.health.all_down, mc.health.snapshot()[0].ejections)
"""


def test_a_forked_child_starts_with_a_fresh_view() -> None:
    # In a script: forking the test process, which runs threads, warns.
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", FORK_SCRIPT, str(EVENTUALLY)],
        capture_output=True,
        text=True,
        timeout=EVENTUALLY * 2,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "True", "1"]


def test_health_of_a_plain_pylibmc_pool_is_empty(master: object) -> None:
    assert mcpool.ClientPool(master, 2).stats().servers == ()


def test_server_health_takes_addresses() -> None:
    health = ServerHealth(["127.0.0.1:1", parse_server("[::1]")], timeout=1.0)
    assert [s.address for s in health.snapshot()] == ["127.0.0.1:1", "[::1]:11211"]
    with pytest.raises(ValueError, match="'nope:x'"):
        ServerHealth(["nope:x"], timeout=1.0)
