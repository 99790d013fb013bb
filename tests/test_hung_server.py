"""A server that accepts connections and never answers, found by reads alone.

Whatever the libmemcached build reports for a read of a paused server (a
plain miss after the timeout on 1.0.16 and 1.0.18, error 31 on 1.1.4), the
client counts it against that server, so its probe, warning, stats and
failing fast work for read-only traffic as they do for writes.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import pytest
from test_servers import eventually

import mcpool
from mcpool.testing import MemcachedServer, free_port

#: The timeout under test: a read of a paused server waits this long.
READ_TIMEOUT = 0.2
#: Everything else is generous: the probe thread runs on a loaded machine.
GENEROUS = 10.0


def key_on(mc: mcpool.Client, index: int, tag: str) -> str:
    """A key that libmemcached sends to the server at *index*."""
    for n in itertools.count():
        key = f"hung:{tag}:{n}"
        if int(mc.hash(key)) == index:
            return key
    raise AssertionError("unreachable")


def warnings_about(caplog: pytest.LogCaptureFixture, address: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "mcpool.servers"
        and r.levelno == logging.WARNING
        and address in r.getMessage()
    ]


READS: dict[str, Callable[[mcpool.Client, str, str], Any]] = {
    "get": lambda mc, key, live: mc.get(key),
    "gets": lambda mc, key, live: mc.gets(key)[0],
    "get_multi": lambda mc, key, live: mc.get_multi([key, live]).get(key),
}


@pytest.mark.parametrize("read", list(READS))
def test_one_read_of_a_paused_server_finds_it(
    read: str,
    fresh_memcached_group: list[MemcachedServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mcpool.servers")
    servers = fresh_memcached_group
    addresses = [s.address for s in servers]
    behaviors = {"cas": True}
    mc = mcpool.Client(addresses, behaviors=behaviors, timeout=READ_TIMEOUT)
    pool = mcpool.ClientPool(mc, 2)
    hung, live = key_on(mc, 1, read), key_on(mc, 0, read)
    # Stored with a client of generous timeout that routes keys alike.
    writer = mcpool.Client(addresses, behaviors=behaviors, timeout=GENEROUS)
    assert writer.set(hung, "v") and writer.set(live, "w")

    servers[1].pause()
    with pool.reserve() as client:
        assert READS[read](client, hung, live) is None
    # One read, and nothing else sent: the probe finds the server down.
    eventually(lambda: not pool.stats().servers[1].available)

    up, down, other = pool.stats().servers
    assert down.address == servers[1].address
    assert down.unavailable >= 1
    assert down.ejections == 1
    assert down.error.startswith("no answer within")
    assert (up.available, other.available) == (True, True)
    (warning,) = warnings_about(caplog, servers[1].address)
    assert "is unavailable: no answer within" in warning
    with pool.reserve() as client:
        assert client.get(live) == "w"


def test_reads_fail_fast_once_every_server_is_found_paused(
    fresh_memcached_group: list[MemcachedServer],
) -> None:
    servers = fresh_memcached_group
    mc = mcpool.Client(
        [s.address for s in servers], behaviors={"cas": True}, timeout=READ_TIMEOUT
    )
    keys = [key_on(mc, index, "all") for index in range(len(servers))]
    for server in servers:
        server.pause()
    # Reads only, one per server at most: the first starts the probe, which
    # asks every server.
    for key in keys:
        assert mc.get(key) is None
    eventually(lambda: mc.health.all_down)

    before = [s.unavailable for s in mc.health.snapshot()]
    assert mc.get(keys[0]) is None
    assert mc.get(keys[1], "default") == "default"
    assert mc.gets(keys[2]) == (None, None)
    assert mc.get_multi(keys) == {}
    after = [s.unavailable for s in mc.health.snapshot()]
    # Each of the 4 reads failed fast, counted against every server at once;
    # a read sent to a server would count against its server alone.
    assert [a - b for a, b in zip(after, before, strict=True)] == [4, 4, 4]
    assert mc.health.all_down


def test_a_slow_miss_of_a_server_that_answers_its_probe_logs_nothing(
    fresh_memcached: MemcachedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcpool.servers")
    missing = f"127.0.0.1:{free_port()}"
    # retry_timeout 30: the probe thread, once it has found the missing
    # server down, sleeps 30 s before it asks again, and this test probes
    # in between itself.
    mc = mcpool.Client(
        [fresh_memcached.address, missing],
        behaviors={"retry_timeout": 30},
        timeout=READ_TIMEOUT,
    )
    mc.health.failed(1)
    eventually(lambda: not mc.health.snapshot()[1].available)
    key = key_on(mc, 0, "slow")

    # Slow for one read, as a loaded machine can make a healthy server.
    fresh_memcached.pause()
    try:
        assert mc.get(key) is None
    finally:
        fresh_memcached.resume()
    mc.health._probe_round()

    slow, down = mc.health.snapshot()
    assert (slow.available, slow.unavailable, slow.ejections) == (True, 1, 0)
    assert not down.available
    assert warnings_about(caplog, fresh_memcached.address) == []
    assert len(warnings_about(caplog, missing)) == 1


def test_a_slow_hit_is_not_a_failure_and_a_slow_miss_is(
    fresh_memcached: MemcachedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcpool.servers")
    mc = mcpool.Client(
        [fresh_memcached.address], behaviors={"cas": True}, timeout=GENEROUS
    )
    assert mc.set("hung:hit", "v")
    # With a read timeout of zero every read "took the timeout".
    mc._read_timeout = 0.0
    assert mc.get("hung:hit") == "v"
    assert mc.gets("hung:hit")[0] == "v"
    assert mc.get_multi(["hung:hit"]) == {"hung:hit": "v"}
    assert mc.health.snapshot()[0].unavailable == 0
    assert mc.health._prober is None
    # Misses count, and the server answers its probe: nothing is logged.
    assert mc.get("hung:absent") is None
    assert mc.gets("hung:absent") == (None, None)
    assert mc.get_multi(["hung:hit", "hung:absent"]) == {"hung:hit": "v"}
    (state,) = mc.health.snapshot()
    assert (state.available, state.unavailable) == (True, 3)
    eventually(lambda: mc.health._prober is None)
    assert mc.health.snapshot()[0].ejections == 0
    assert warnings_about(caplog, fresh_memcached.address) == []
