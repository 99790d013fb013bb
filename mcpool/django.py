"""Django cache backend: one pool of memcached clients per cache per process.

.. code-block:: python

    # settings.py
    CACHES = {
        "default": {
            "BACKEND": "mcpool.django.PyLibMCCache",
            "LOCATION": "10.0.0.1:11211,10.0.0.2:11211",
            "OPTIONS": {"POOL": {"max_size": 8}},
        }
    }
    INSTALLED_APPS = [..., "mcpool"]  # for: python manage.py mcpool stats|ping

:class:`PyLibMCCache` is a drop-in for Django's
``django.core.cache.backends.memcached.PyLibMCCache``: ``LOCATION``,
``TIMEOUT``, ``KEY_PREFIX``, ``VERSION``, ``KEY_FUNCTION`` and the pylibmc
``OPTIONS`` (``binary``, ``username``, ``password``, ``behaviors``) mean
what they mean there, and every method keeps Django's semantics. The
difference is the connections. Django gives each thread (and each async
context) a backend instance of its own, and the stock backend gives each
instance a client of its own: under a thread-per-request server that is a
new memcached connection for every request. Here every instance of a cache
configuration shares one :class:`~mcpool.ClientPool` per process, and each
cache call reserves a client for that call alone; the pool opens at most
``max_size`` connections per server, waiters are served in arrival order,
and a forked child (``gunicorn --preload``) never touches its parent's
connections. ``close()``, which Django calls at the end of each request,
leaves the pool alone.

The clients are :class:`mcpool.Client`, with its production defaults: a
read whose server is down is a miss, a write raises
:class:`~mcpool.ServerUnavailable`, and an oversize value raises
:class:`~mcpool.ValueTooLarge` and leaves the key without a value.

See ``docs/django.rst`` for every option and the measured connections.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any

import pylibmc

try:
    from django.core.cache.backends.base import DEFAULT_TIMEOUT
    from django.core.cache.backends.memcached import PyLibMCCache as _StockPyLibMCCache
except ImportError as exc:
    raise ImportError(
        f"mcpool.django needs Django, which could not be imported ({exc}): "
        "install it with pip install 'mcpool[django]'"
    ) from exc

from django.core.exceptions import ImproperlyConfigured

from .client import DEFAULT_TIMEOUT as DEFAULT_SERVER_TIMEOUT
from .client import Client
from .clientpool import ClientPool
from .keys import safe_key
from .telemetry import export_metrics

__all__ = ["CLIENT_OPTIONS", "POOL_DEFAULTS", "POOL_OPTIONS", "PyLibMCCache"]

#: The keys of ``OPTIONS`` that configure each client.
CLIENT_OPTIONS = ("binary", "username", "password", "behaviors", "server_timeout")

#: The keys of ``OPTIONS["POOL"]``: :class:`~mcpool.ClientPool`'s arguments.
POOL_OPTIONS = (
    "max_size",
    "timeout",
    "min_idle",
    "max_idle",
    "max_spare",
    "max_lifetime",
    "lifetime_jitter",
    "leak_timeout",
    "max_waiting",
    "keepalive",
)

#: What ``OPTIONS["POOL"]`` starts from.
POOL_DEFAULTS: Mapping[str, Any] = {"max_size": 10, "timeout": 2.0}


# -- one pool per configuration per process ------------------------------------
#
# Django makes a backend instance per thread and per async context, from the
# same settings; the pool belongs to the settings, not to the instance. The
# key is what the pool is built from (servers and OPTIONS), so aliases that
# differ only in KEY_PREFIX, VERSION or TIMEOUT share their connections.

_pools: dict[str, ClientPool[Client]] = {}
_pools_lock = threading.Lock()


def _new_pools_lock() -> None:
    # A thread of the parent may have held the lock at the fork; the child's
    # copy would stay locked. The pools themselves reset in the child.
    global _pools_lock
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_pools_lock)


def _shared_pool(
    servers: list[str],
    client_options: Mapping[str, Any],
    pool_options: Mapping[str, Any],
) -> ClientPool[Client]:
    key = json.dumps(
        [servers, client_options, pool_options], sort_keys=True, default=repr
    )
    pool = _pools.get(key)
    if pool is not None:
        return pool
    error: ImproperlyConfigured | None = None
    # A configuration error is raised once the lock is released: on Python
    # 3.10 a signal handler that raises while an exception leaves a with
    # block skips the block's __exit__, and the lock would stay held.
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            options = dict(pool_options)
            size = options.pop("max_size")
            metrics = options.pop("metrics", None)
            try:
                pool = ClientPool(
                    _make_client(servers, client_options),
                    size,
                    name=f"django cache {','.join(servers)}",
                    **options,
                )
                # Here, on first use: in a forked worker, after the fork.
                export_metrics(pool, metrics, "CACHES OPTIONS['metrics']")
            except (TypeError, ValueError) as exc:
                if pool is None:
                    error = ImproperlyConfigured(
                        f"CACHES OPTIONS['POOL'] {dict(pool_options)!r} for "
                        f"{servers!r}: {exc}"
                    )
                else:
                    pool.close()
                    error = ImproperlyConfigured(str(exc))
            else:
                _pools[key] = pool
    if error is not None:
        raise error from None
    assert pool is not None
    return pool


def _make_client(servers: list[str], options: Mapping[str, Any]) -> Client:
    try:
        return Client(
            servers,
            behaviors=options.get("behaviors") or {},
            binary=options.get("binary"),
            username=options.get("username"),
            password=options.get("password"),
            timeout=options.get("server_timeout", DEFAULT_SERVER_TIMEOUT),
        )
    except (TypeError, ValueError) as exc:
        shown = {
            name: "***" if name == "password" else value
            for name, value in options.items()
        }
        raise ImproperlyConfigured(
            f"CACHES OPTIONS {shown!r} for {servers!r}: {exc}"
        ) from None


def _split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``OPTIONS`` as (client options, pool options), checked."""
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"CACHES OPTIONS must be a dict, got {options!r}")
    client_options: dict[str, Any] = {}
    pool_options: dict[str, Any] = dict(POOL_DEFAULTS)
    for name, value in options.items():
        if name == "POOL":
            if not isinstance(value, Mapping):
                raise ImproperlyConfigured(
                    f"CACHES OPTIONS['POOL'] must be a dict, got {value!r}"
                )
            unknown = sorted(set(value) - set(POOL_OPTIONS))
            if unknown:
                raise ImproperlyConfigured(
                    f"CACHES OPTIONS['POOL'] has unknown keys {unknown!r}; the "
                    f"pool's options are {', '.join(POOL_OPTIONS)}"
                )
            pool_options.update(value)
        elif name in CLIENT_OPTIONS:
            client_options[name] = value
        elif name == "metrics":
            # Kept with the pool's options: caches that export metrics and
            # caches that do not never share a pool.
            pool_options["metrics"] = value
        elif name == "timeout":
            raise ImproperlyConfigured(
                "CACHES OPTIONS['timeout'] is ambiguous: use OPTIONS['server_timeout'] "
                "for the seconds a memcached server may take to answer, "
                "OPTIONS['POOL']['timeout'] for the seconds to wait for a free "
                "client, or TIMEOUT for the cache entries' lifetime"
            )
        else:
            raise ImproperlyConfigured(
                f"CACHES OPTIONS has an unknown key {name!r}; the keys are "
                f"{', '.join(CLIENT_OPTIONS)}, metrics and POOL"
            )
    behaviors = client_options.get("behaviors")
    if behaviors is not None and not isinstance(behaviors, Mapping):
        raise ImproperlyConfigured(
            f"CACHES OPTIONS['behaviors'] must be a dict, got {behaviors!r}"
        )
    return client_options, pool_options


class PyLibMCCache(_StockPyLibMCCache):  # type: ignore[misc]
    """Django's ``PyLibMCCache`` on a shared, bounded :class:`~mcpool.ClientPool`.

    Made by Django's cache handler from a ``CACHES`` entry whose
    ``BACKEND`` is ``"mcpool.django.PyLibMCCache"``; ``OPTIONS`` takes the
    client's ``binary``, ``username``, ``password``, ``behaviors`` and
    ``server_timeout`` (seconds to connect and per read or write, 0.25 by
    default) and ``"POOL"``, a dict of :class:`~mcpool.ClientPool`'s
    arguments (``max_size``, 10 by default; ``timeout``, 2.0; ``min_idle``,
    ``max_idle``, ``max_spare``, ``max_lifetime``, ``lifetime_jitter``,
    ``leak_timeout``).

    Keys follow Django's memcached rules (:class:`InvalidCacheKey` for a
    key over 250 characters or with a space or control character). A key
    with non-ASCII characters, which Django allows, is stored under its
    :func:`mcpool.safe_key`.

    :raises django.core.exceptions.ImproperlyConfigured: for an unknown or
        malformed option; the message names it.

    >>> from django.core.cache import caches
    >>> caches["default"].set("greeting", "hello")  # doctest: +SKIP
    >>> caches["default"].pool.stats().max_size  # doctest: +SKIP
    10

    .. versionadded:: 0.1
    """

    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = Client
        self._client_options, self._pool_options = _split_options(self._options)

    @cached_property
    def pool(self) -> ClientPool[Client]:
        """The process's pool for this cache's servers and options.

        Shared by every instance made from the same settings, in every
        thread; made on first use.
        """
        return _shared_pool(
            self.client_servers, self._client_options, self._pool_options
        )

    @cached_property
    def _cache(self) -> _PooledClient:
        # Django's own backend keeps its client here, and code written for it
        # reads it (cache._cache.get_stats()); each call reserves a client.
        return _PooledClient(self.pool)

    def make_client(self, servers: list[str] | None = None) -> Client:
        """A new client, outside the pool, configured as the pool's are.

        For one-off work that must not hold a pooled client (``manage.py
        mcpool`` asks each server on a client of its own). The caller
        disconnects it.

        >>> mc = caches["default"].make_client(["10.0.0.1:11211"])  # doctest: +SKIP
        """
        return _make_client(
            self.client_servers if servers is None else servers, self._client_options
        )

    def make_and_validate_key(self, key: Any, version: int | None = None) -> Any:
        key = super().make_and_validate_key(key, version=version)
        # Django lets characters above ASCII through, which mcpool.Client
        # refuses (its keys mean the same in both protocols): such a key goes
        # to memcached as its safe_key, distinct for distinct keys.
        if type(key) is str and not key.isascii():
            return safe_key(key)
        return key

    def add(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> bool:
        key = self.make_and_validate_key(key, version=version)
        with self.pool.reserve() as mc:
            return bool(mc.add(key, value, self.get_backend_timeout(timeout)))

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        with self.pool.reserve() as mc:
            return mc.get(key, default)

    def set(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> None:
        key = self.make_and_validate_key(key, version=version)
        with self.pool.reserve() as mc:
            if not mc.set(key, value, self.get_backend_timeout(timeout)):
                # As Django's backend: a refused value must not leave the old
                # one readable.
                mc.delete(key)

    def touch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key = self.make_and_validate_key(key, version=version)
        with self.pool.reserve() as mc:
            if timeout == 0:
                return bool(mc.delete(key))
            return bool(mc.touch(key, self.get_backend_timeout(timeout)))

    def delete(self, key: Any, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        with self.pool.reserve() as mc:
            return bool(mc.delete(key))

    def get_many(
        self, keys: Iterable[Any], version: int | None = None
    ) -> dict[Any, Any]:
        key_map = {
            self.make_and_validate_key(key, version=version): key for key in keys
        }
        with self.pool.reserve() as mc:
            found = mc.get_multi(key_map.keys())
        return {key_map[key]: value for key, value in found.items()}

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        key = self.make_and_validate_key(key, version=version)
        try:
            with self.pool.reserve() as mc:
                # memcached has no negative delta.
                if delta < 0:
                    value = mc.decr(key, -delta)
                else:
                    value = mc.incr(key, delta)
        except pylibmc.NotFound:
            value = None
        if value is None:
            raise ValueError(f"Key '{key}' not found")
        return int(value)

    def set_many(
        self,
        data: Mapping[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[Any]:
        wire_data = {}
        original_keys = {}
        for key, value in data.items():
            wire_key = self.make_and_validate_key(key, version=version)
            wire_data[wire_key] = value
            original_keys[wire_key] = key
        with self.pool.reserve() as mc:
            failed = mc.set_multi(wire_data, self.get_backend_timeout(timeout))
        return [original_keys[key] for key in failed]

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        wire_keys = [self.make_and_validate_key(key, version=version) for key in keys]
        with self.pool.reserve() as mc:
            mc.delete_multi(wire_keys)

    def clear(self) -> None:
        with self.pool.reserve() as mc:
            mc.flush_all()

    def close(self, **kwargs: Any) -> None:
        # Django calls this at the end of every request. The connections are
        # the pool's, kept for the next request; nothing is held here.
        pass


class _PooledClient:
    """The client API of a pool, each call on a client reserved for it.

    What ``cache._cache`` is: Django's backend keeps its client there, and
    code written for it calls methods on it or reads its settings.
    """

    __slots__ = ("_pool",)

    def __init__(self, pool: ClientPool[Client]) -> None:
        self._pool = pool

    def set_behaviors(self, behaviors: Mapping[str, Any]) -> None:
        self._pool.set_behaviors(behaviors)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._pool.master, name)
        if not callable(value):
            return value  # binary, behaviors: the same on every client
        pool = self._pool

        def reserved_call(*args: Any, **kwargs: Any) -> Any:
            with pool.reserve() as mc:
                return getattr(mc, name)(*args, **kwargs)

        reserved_call.__name__ = name
        return reserved_call
