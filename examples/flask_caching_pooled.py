"""Flask-Caching's memcached backend on an mcpool pool.

Flask-Caching's ``MemcachedCache`` takes either server addresses or a
ready-made client object. Handed :class:`PooledClient`, an object that looks
like one memcached client but reserves a client from a
:class:`mcpool.ClientPool` for each call, it keeps its decorators
(``@cache.cached``, ``@cache.memoize``) and its API, and gets a bounded,
fair, fork-safe pool underneath:

.. code-block:: python

    app.config.update(
        CACHE_TYPE="examples.flask_caching_pooled.pooled_memcached",
        CACHE_MEMCACHED_SERVERS=["127.0.0.1:11211"],
        CACHE_MEMCACHED_POOL_SIZE=8,  # clients per process
    )
    cache = Cache(app)

Run the demo app with ``flask --app examples.flask_caching_pooled run``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pylibmc
from flask import Flask
from flask_caching import Cache
from flask_caching.backends.memcache import MemcachedCache

from mcpool import ClientPool


class PooledClient:
    """Looks like one pylibmc client; each method call reserves a pooled one.

    Only for callers that make one memcached call at a time and keep no
    client between calls, as Flask-Caching's backend does. A call is one
    ``with pool.reserve()`` block, so a fatal pylibmc error replaces the
    client it happened on, and :class:`~mcpool.PoolTimeout` is raised after
    the pool's *timeout* when every client is busy.
    """

    def __init__(self, pool: ClientPool[pylibmc.Client]) -> None:
        self.pool = pool

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.pool.reserve() as mc:
                return getattr(mc, name)(*args, **kwargs)

        call.__name__ = name
        return call


def pooled_memcached(
    app: Flask, config: Mapping[str, Any], args: list[Any], kwargs: dict[str, Any]
) -> MemcachedCache:
    """A ``CACHE_TYPE`` factory: Flask-Caching's ``MemcachedCache`` on a pool.

    Reads ``CACHE_MEMCACHED_SERVERS``, ``CACHE_KEY_PREFIX`` and two keys of
    its own: ``CACHE_MEMCACHED_POOL_SIZE`` (clients per process, default 8)
    and ``CACHE_MEMCACHED_POOL_TIMEOUT`` (seconds to wait for one, default 2).
    """
    master = pylibmc.Client(config["CACHE_MEMCACHED_SERVERS"], binary=True)
    pool = ClientPool(
        master,
        int(config.get("CACHE_MEMCACHED_POOL_SIZE", 8)),
        timeout=float(config.get("CACHE_MEMCACHED_POOL_TIMEOUT", 2.0)),
        name="flask-caching",
    )
    kwargs.update(key_prefix=config["CACHE_KEY_PREFIX"])
    kwargs.pop("ignore_delete_many_errors", None)
    return MemcachedCache(PooledClient(pool), *args, **kwargs)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A demo app: one memoized function, one cached view, one counter."""
    app = Flask(__name__)
    app.config.update(
        CACHE_TYPE="examples.flask_caching_pooled.pooled_memcached",
        CACHE_MEMCACHED_SERVERS=["127.0.0.1:11211"],
        CACHE_DEFAULT_TIMEOUT=60,
    )
    app.config.update(config or {})
    cache = Cache(app)

    @cache.memoize()
    def square(n: int) -> int:
        time.sleep(0.01)  # stands in for real work
        return n * n

    @app.get("/square/<int:n>")
    def show_square(n: int) -> str:
        return f"{n}^2 = {square(n)}\n"

    @app.get("/now")
    @cache.cached(timeout=5)
    def now() -> str:
        return f"{time.time():.6f}\n"

    @app.get("/hits/<name>")
    def hits(name: str) -> str:
        cache.add(f"hits:{name}", 0)
        return f"{name}: {cache.cache.inc(f'hits:{name}')}\n"

    app.extensions["pooled_cache"] = cache
    return app
