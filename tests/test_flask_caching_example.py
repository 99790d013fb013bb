"""The Flask-Caching migration recipe: its backend on an mcpool pool."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from examples.flask_caching_pooled import PooledClient, create_app
from mcpool import PoolTimeout
from mcpool.testing import MemcachedServer


def test_concurrent_requests_share_a_bounded_pool(
    fresh_memcached: MemcachedServer,
) -> None:
    app = create_app(
        {
            "CACHE_MEMCACHED_SERVERS": [fresh_memcached.address],
            "CACHE_MEMCACHED_POOL_SIZE": 3,
            # Sixteen threads share three clients: on a busy machine one may
            # wait longer than the default 2 s; timing out is not the point.
            "CACHE_MEMCACHED_POOL_TIMEOUT": 60,
        }
    )
    before = int(fresh_memcached.stats()["total_connections"])
    paths = [f"/hits/name{n % 20}" for n in range(100)]
    paths += [f"/square/{n % 10}" for n in range(100)]

    def fetch(path: str) -> tuple[str, int, str]:
        with app.test_client() as client:
            response = client.get(path)
            return path, response.status_code, response.get_data(as_text=True)

    with ThreadPoolExecutor(16) as executor:
        results = list(executor.map(fetch, paths))

    assert [r for r in results if r[1] != 200] == []
    counts: dict[str, list[int]] = defaultdict(list)
    for path, _, body in results:
        if path.startswith("/square/"):
            n = int(path.removeprefix("/square/"))
            assert body == f"{n}^2 = {n * n}\n"
        else:
            name, count = body.split(": ")
            counts[name].append(int(count))
    assert all(sorted(c) == [1, 2, 3, 4, 5] for c in counts.values()), counts
    pool = app.extensions["pooled_cache"].cache._client.pool
    stats = pool.stats()
    assert 1 <= stats.created <= 3 and stats.timeouts == 0
    # One stats connection before, one now; the rest are the pool's.
    opened = int(fresh_memcached.stats()["total_connections"]) - before - 1
    assert opened == stats.created


def test_a_busy_pool_times_out_and_the_next_call_works(
    fresh_memcached: MemcachedServer,
) -> None:
    app = create_app(
        {
            "CACHE_MEMCACHED_SERVERS": [fresh_memcached.address],
            "CACHE_MEMCACHED_POOL_SIZE": 1,
            "CACHE_MEMCACHED_POOL_TIMEOUT": 0.05,
        }
    )
    cache = app.extensions["pooled_cache"]
    client: PooledClient = cache.cache._client
    with app.app_context():
        assert cache.set("k", "v")
        lease = client.pool.checkout()
        with pytest.raises(PoolTimeout, match="flask-caching"):
            cache.get("k")
        lease.release()
        assert cache.get("k") == "v"
    assert client.pool.stats().in_use == 0


def test_the_extension_reads_what_flask_caching_wrote_and_back(
    fresh_memcached: MemcachedServer,
) -> None:
    # The migration page's claim: values are stored the same way, so moving
    # from Flask-Caching's backend to mcpool.flask keeps the cache's contents.
    from flask import Flask
    from flask_caching import Cache

    from mcpool.flask import MemcachePool

    app = Flask(__name__)
    cache = Cache(
        app,
        config={
            "CACHE_TYPE": "MemcachedCache",
            "CACHE_MEMCACHED_SERVERS": [fresh_memcached.address],
            "CACHE_KEY_PREFIX": "myapp:",
        },
    )
    app.config["MCPOOL_SERVERS"] = [fresh_memcached.address]
    app.config["MCPOOL_SERVER_TIMEOUT"] = 10.0  # generous: a busy machine is slow
    memcache = MemcachePool()
    memcache.init_app(app)
    with app.app_context():
        cache.set("user:42", {"name": "ann"}, timeout=300)
        assert memcache.client.get("myapp:user:42") == {"name": "ann"}
        assert memcache.client.get("myapp:user:0") is None
        memcache.client.set("myapp:user:43", ["bob"], time=300)
        assert cache.get("user:43") == ["bob"]
