"""mcpool.django: the pool behind Django's cache API, against a real memcached.

Django's own cache tests run in tests/test_django_suite.py; these check what
they cannot see: that every backend instance of a configuration shares one
bounded pool, that connections stay within it, the options, and the
management command. The backends are made directly, as Django's cache
handler makes them, so no Django settings are configured in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pylibmc
import pytest
from django.core.cache.backends.memcached import PyLibMCCache as StockPyLibMCCache
from django.core.exceptions import ImproperlyConfigured

import mcpool
from mcpool.django import PyLibMCCache
from mcpool.testing import MemcachedServer, free_port

REPO = Path(__file__).resolve().parent.parent
THREADS = 16
CALLS_PER_THREAD = 40
POOL_SIZE = 4
# Generous, so that a busy machine never turns a slow reply into a miss or a
# wait into PoolTimeout in tests that are not about timeouts.
SLOW_MACHINE = {"server_timeout": 10.0}


def backend(location: str, **options: Any) -> PyLibMCCache:
    """A backend as Django's cache handler makes one from a CACHES entry."""
    params: dict[str, Any] = {"OPTIONS": {**SLOW_MACHINE, **options}}
    return PyLibMCCache(location, params)


def pool_options(**pool: Any) -> dict[str, Any]:
    # The pools are per process, one per servers and options: tests on the
    # session's server with equal options share one, as Django's aliases do.
    return {"POOL": {"max_size": POOL_SIZE, "timeout": 30.0, **pool}}


def test_instances_in_all_threads_share_one_pool(memcached: MemcachedServer) -> None:
    options = pool_options()
    pools: list[Any] = []
    lock = threading.Lock()

    def make() -> None:
        instance = backend(memcached.address, **options)
        instance.set("shared", "yes")
        with lock:
            pools.append(instance.pool)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pools) == 8 and all(pool is pools[0] for pool in pools)
    assert pools[0].stats().max_size == POOL_SIZE


def test_close_keeps_the_pool_and_each_call_gives_its_client_back(
    memcached: MemcachedServer,
) -> None:
    cache = backend(memcached.address, **pool_options())
    cache.set("k", 1)
    cache.close()  # Django calls it at the end of every request
    assert not cache.pool.closed
    assert cache.get("k") == 1
    stats = cache.pool.stats()
    assert stats.in_use == 0 and stats.size >= 1


def test_threads_stay_within_the_pool_bound(
    fresh_memcached: MemcachedServer,
) -> None:
    # Each thread has its own backend instance, as under a threaded server;
    # the stock backend would open one connection per instance.
    base = int(fresh_memcached.stats()["total_connections"])
    options = pool_options()
    errors: list[str] = []
    barrier = threading.Barrier(THREADS)

    def work(n: int) -> None:
        cache = backend(fresh_memcached.address, **options)
        barrier.wait()
        try:
            for i in range(CALLS_PER_THREAD):
                key = f"t{n}:{i}"
                if cache.get(key) is not None:
                    errors.append(f"{key}: not new")
                cache.set(key, (n, i))
                if cache.get(key) != (n, i):
                    errors.append(f"{key}: wrong value")
        except Exception as exc:  # every failure is reported, of any kind
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:5]
    opened = int(fresh_memcached.stats()["total_connections"]) - base
    # + 1: the stats question itself
    assert 0 < opened <= POOL_SIZE + 1


def test_stock_and_pooled_backends_read_each_others_values(
    memcached: MemcachedServer,
) -> None:
    # Same keys on the wire: a project can switch BACKEND without losing
    # its cache, and run both during a rolling deploy.
    params: dict[str, Any] = {"KEY_PREFIX": "interop", "VERSION": 3}
    stock = StockPyLibMCCache(memcached.address, dict(params))
    pooled = PyLibMCCache(
        memcached.address, {**params, "OPTIONS": {**SLOW_MACHINE, **pool_options()}}
    )
    stock.set("from-stock", [1, 2])
    pooled.set_many({"from-pooled": {"a": 1}, "n": 5})
    assert pooled.get("from-stock") == [1, 2]
    assert stock.get_many(["from-pooled", "n"]) == {"from-pooled": {"a": 1}, "n": 5}
    assert pooled.incr("n", 2) == 7 and stock.get("n") == 7


def test_a_key_with_non_ascii_characters_is_stored_under_its_safe_key(
    memcached: MemcachedServer,
) -> None:
    cache = backend(memcached.address, **pool_options())
    cache.set("café", "au lait")
    assert cache.get("café") == "au lait"
    assert cache.get("cafe") is None
    wire = mcpool.safe_key(cache.make_key("café"))
    assert pylibmc.Client([memcached.address]).get(wire) == "au lait"


def test_a_down_server_is_a_miss_for_reads_and_an_error_for_writes() -> None:
    cache = backend(f"127.0.0.1:{free_port()}", server_timeout=1.0)
    assert cache.get("k", "default") == "default"
    assert cache.get_many(["a", "b"]) == {}
    assert cache.has_key("k") is False
    with pytest.raises(mcpool.ServerUnavailable):
        cache.set("k", "v")
    assert cache.pool.stats().in_use == 0


def test_private_attributes_of_djangos_backend_work(memcached: MemcachedServer) -> None:
    cache = backend(memcached.address, binary=True, **pool_options())
    assert cache._lib is pylibmc and cache._class is mcpool.Client
    assert cache._cache.binary is True
    assert cache._cache.get_stats()  # a pooled client, for that call only
    cache._cache.set_behaviors({"tcp_keepalive": False})
    with cache.pool.reserve() as mc:
        assert mc.behaviors["tcp_keepalive"] == 0
    assert cache.pool.stats().in_use == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": 1}, "server_timeout"),
        ({"severs": "x"}, "unknown key 'severs'"),
        ({"POOL": {"size": 4}}, "unknown keys ['size']"),
        ({"POOL": 4}, "must be a dict"),
        ({"behaviors": ["tcp_nodelay"]}, "must be a dict"),
    ],
)
def test_malformed_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message.replace("[", r"\[")):
        PyLibMCCache("127.0.0.1:11211", {"OPTIONS": options})


def test_a_malformed_pool_option_is_named_on_first_use() -> None:
    cache = PyLibMCCache(
        "127.0.0.1:11211", {"OPTIONS": {"POOL": {"max_size": 4, "timeout": "soon"}}}
    )
    with pytest.raises(ImproperlyConfigured, match="timeout must be a number"):
        cache.get("k")


def test_a_malformed_client_option_is_named_without_the_password() -> None:
    cache = PyLibMCCache(
        "127.0.0.1:11211",
        {"OPTIONS": {"username": "u", "password": "s3cret", "binary": False}},
    )
    with pytest.raises(ImproperlyConfigured, match="binary protocol") as info:
        cache.get("k")
    assert "s3cret" not in str(info.value)


def test_importing_without_django_names_the_extra() -> None:
    code = "import sys; sys.modules['django'] = None; import mcpool.django"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "pip install 'mcpool[django]'" in result.stderr


def manage(*args: str, servers: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            *args,
            "--settings=examples.django_site.settings",
        ],
        cwd=REPO,
        env={**os.environ, "MCPOOL_SERVERS": servers, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_manage_mcpool_ping_and_stats(memcached: MemcachedServer) -> None:
    ping = manage("mcpool", "ping", servers=memcached.address)
    assert ping.returncode == 0, ping.stderr
    assert f"default  {memcached.address}  ok  " in ping.stdout
    stats = manage("mcpool", "stats", servers=memcached.address)
    assert stats.returncode == 0, stats.stderr
    assert "cache 'default': ClientPool" in stats.stdout
    assert "  max_size: 8" in stats.stdout
    assert "  curr_connections: " in stats.stdout


def test_manage_mcpool_ping_fails_for_a_down_server(memcached: MemcachedServer) -> None:
    down = f"127.0.0.1:{free_port()}"
    ping = manage("mcpool", "ping", servers=f"{memcached.address},{down}")
    assert ping.returncode == 1
    assert f"{down}  FAILED" in ping.stdout
    assert "1 of 2 servers did not answer" in ping.stderr


def test_async_calls_share_the_pool(fresh_memcached: MemcachedServer) -> None:
    # Django runs an async view's cache calls (aget, aset, ...) in threads;
    # they reserve from the same pool as the sync calls.
    import asyncio

    cache = backend(fresh_memcached.address, **pool_options())

    async def main() -> list[Any]:
        await asyncio.gather(*(cache.aset(f"a{n}", n) for n in range(32)))
        return list(await asyncio.gather(*(cache.aget(f"a{n}") for n in range(32))))

    base = int(fresh_memcached.stats()["total_connections"])
    assert asyncio.run(main()) == list(range(32))
    opened = int(fresh_memcached.stats()["total_connections"]) - base
    assert 0 < opened <= POOL_SIZE + 1  # + 1: the stats question itself
    assert cache.pool.stats().in_use == 0


OVERLOAD_SCRIPT = """
import django
from django.core.cache import caches
from django.test import Client

django.setup()
pool = caches["default"].pool
client = Client()
assert client.get("/").status_code == 200
held = pool.reserve()
held.__enter__()  # the pool's only client, so the next call must wait
refused = client.get("/")
held.__exit__(None, None, None)
again = client.get("/")
print(refused.status_code, refused["Retry-After"], again.status_code,
      pool.stats().rejected, pool.stats().in_use)
"""


def test_a_full_line_answers_503_through_the_examples_middleware(
    memcached: MemcachedServer,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", OVERLOAD_SCRIPT],
        cwd=REPO,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "examples.django_site.settings",
            "MCPOOL_SERVERS": memcached.address,
            "MCPOOL_SERVER_TIMEOUT": "10",
            "MCPOOL_POOL_SIZE": "1",
            "MCPOOL_MAX_WAITING": "0",
            "PYTHONPATH": str(REPO),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["503", "1", "200", "1", "0"]


def test_metrics_option_instruments_the_shared_pool(memcached: MemcachedServer) -> None:
    cache = backend(memcached.address, metrics="otel", **pool_options(max_size=3))
    cache.set("metrics", 1)
    assert cache.get("metrics") == 1
    # Instrumented: the pool times its waits and uses from now on.
    assert cache.pool.stats().use_time is not None
    plain = backend(memcached.address, **pool_options(max_size=3))
    assert plain.pool is not cache.pool


def test_an_unknown_metrics_exporter_is_refused_naming_the_option(
    memcached: MemcachedServer,
) -> None:
    cache = backend(memcached.address, metrics="statsd", **pool_options(max_size=2))
    with pytest.raises(ImproperlyConfigured, match=r"CACHES OPTIONS\['metrics'\]"):
        cache.get("metrics")
    fixed = backend(memcached.address, metrics=None, **pool_options(max_size=2))
    assert fixed.get("metrics:none") is None
