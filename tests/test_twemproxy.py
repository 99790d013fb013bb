"""mcpool through twemproxy (nutcracker) in front of three memcached servers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pylibmc

import mcpool
from mcpool import ClientPool, ServerUnavailable
from mcpool.testing import MemcachedServer, Twemproxy

# Generous: a busy machine must not turn a slow reply into a failure.
TIMEOUT = 10.0


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def server_of(servers: list[MemcachedServer], keys: list[str]) -> dict[str, int]:
    """Which server holds each key, read from each server directly."""
    where: dict[str, int] = {}
    for index, server in enumerate(servers):
        direct = pylibmc.Client([server.address])
        for key in direct.get_multi(keys):
            where[key] = index
    return where


def test_a_clientpool_works_through_the_proxy(twemproxy: Twemproxy) -> None:
    pool = ClientPool(mcpool.Client.for_proxy(twemproxy.address, timeout=TIMEOUT), 4)
    keys = [f"proxy:{i}" for i in range(60)]
    with pool.reserve() as mc:
        assert mc.set_multi({key: key for key in keys}) == []
        assert mc.get_multi(keys) == {key: key for key in keys}
        assert mc.get("proxy:0") == "proxy:0"
        assert mc.delete("proxy:0")
    # The proxy spread the keys over all three servers.
    where = server_of(twemproxy.servers, keys[1:])
    assert len(where) == 59 and set(where.values()) == {0, 1, 2}
    pool.close()


def test_a_server_killed_and_restarted_under_load_costs_misses_not_errors(
    twemproxy: Twemproxy,
) -> None:
    servers = twemproxy.servers
    pool = ClientPool(mcpool.Client.for_proxy(twemproxy.address, timeout=TIMEOUT), 8)
    keys = [f"load:{i}" for i in range(90)]
    with pool.reserve() as mc:
        mc.set_multi({key: key for key in keys})
    victim_keys = [k for k, i in server_of(servers, keys).items() if i == 1]
    outcomes: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def work(index: int) -> None:
        n = index
        while not stop.is_set():
            key = keys[n % len(keys)]
            n += 7
            try:
                with pool.reserve() as mc:
                    hit = mc.get(key) == key
                    try:
                        mc.set(key, key)
                        stored = "stored"
                    except ServerUnavailable:
                        stored = "not stored"
            except BaseException as exc:
                errors.append(exc)
                return
            with lock:
                outcomes["hit" if hit else "miss"] += 1
                outcomes[stored] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    wait_for(lambda: outcomes["hit"] > 100, "traffic")
    servers[1].kill()
    # Ejected: its keys move to the two others, where writes land again.
    wait_for(
        lambda: any(
            pylibmc.Client([servers[i].address]).get(victim_keys[0]) is not None
            for i in (0, 2)
        ),
        "the victim's keys to move",
    )
    servers[1].start()
    # Back after server_retry_timeout: its keys are written to it again.
    wait_for(
        lambda: pylibmc.Client([servers[1].address]).get(victim_keys[0]) is not None,
        "the restarted server to take its keys back",
    )
    stop.set()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert outcomes["hit"] > 0
    pool.close()


def test_libmemcached_ketama_and_twemproxy_ketama_place_keys_alike(
    twemproxy: Twemproxy,
) -> None:
    """The fraction of keys that both rings send to the same server, with the
    same server list: what the docs quote (benchmarks/bench_twemproxy.py
    measures it over 100,000 keys)."""
    servers = twemproxy.servers
    direct = mcpool.Client([s.address for s in servers], timeout=TIMEOUT)
    proxied = mcpool.Client.for_proxy(twemproxy.address, timeout=TIMEOUT)
    keys = [f"ring:{i}" for i in range(3000)]
    assert proxied.set_multi({key: 1 for key in keys}) == []
    where = server_of(servers, keys)
    assert len(where) == len(keys)
    same = sum(direct.hash(key) == where[key] for key in keys) / len(keys)
    assert same < 0.6, same  # mcpool.Client's defaults disagree
    # libmemcached's weighted ketama with MD5 is twemproxy's ring, on the
    # client itself; a clone loses the weighting (memcached_clone).
    addresses = [s.address for s in servers]
    weighted = mcpool.Client(
        addresses, behaviors={"ketama": False, "ketama_weighted": True}
    )
    assert all(weighted.hash(key) == where[key] for key in keys)
    clone = weighted.clone()
    assert sum(clone.hash(key) == where[key] for key in keys) / len(keys) < 0.6


def test_reading_through_both_rings_moves_an_app_without_losing_keys(
    twemproxy: Twemproxy,
) -> None:
    """The migration recipe of docs/scale-out.rst."""
    servers = [s.address for s in twemproxy.servers]
    old = ClientPool(mcpool.Client(servers, timeout=TIMEOUT), 2)
    new = ClientPool(mcpool.Client.for_proxy(twemproxy.address, timeout=TIMEOUT), 2)
    keys = [f"move:{i}" for i in range(200)]
    with old.reserve() as mc:
        assert mc.set_multi({key: key for key in keys}) == []
    with new.reserve() as mc:
        moved = len(keys) - len(mc.get_multi(keys))
    assert moved > 50  # about half would be lost by a plain switch

    def cached(key: str) -> object:
        with new.reserve() as mc:
            value = mc.get(key)
            if value is None:
                with old.reserve() as previous:
                    value = previous.get(key)
                if value is not None:
                    mc.set(key, value)
            return value

    assert all(cached(key) == key for key in keys)
    with new.reserve() as mc:  # now the proxy alone has them all
        assert mc.get_multi(keys) == {key: key for key in keys}
    old.close()
    new.close()
