"""A cachelib backend on an mcpool pool, for cachelib and Flask-Caching.

.. code-block:: python

    from mcpool.cachelib import MemcachedCache

    cache = MemcachedCache(["10.0.0.1:11211", "10.0.0.2:11211"], key_prefix="app:")
    cache.set("user:42", profile, timeout=300)
    cache.get("user:42")

    # Flask-Caching
    app.config["CACHE_TYPE"] = "mcpool.cachelib.MemcachedCache"
    app.config["CACHE_MEMCACHED_SERVERS"] = ["10.0.0.1:11211", "10.0.0.2:11211"]
    cache = Cache(app)

:class:`MemcachedCache` keeps cachelib's API and semantics (its
``MemcachedCache`` and ``BaseCache``), and differs where cachelib's leaves
the application exposed:

- every operation reserves a client from a bounded, fair
  :class:`~mcpool.ClientPool` (or the pool it is given) for that one call,
  and waits at most the pool's timeout for one;
- the clients are :class:`mcpool.Client`: a server that is down or hung is a
  miss for reads and a ``False`` (or ``None``) for writes, never an
  exception;
- every key reaches memcached valid: a key that is not (too long, spaces,
  non-ASCII, control characters) is mapped with :func:`mcpool.safe_key`,
  instead of being refused by the server or silently ignored;
- :meth:`~MemcachedCache.inc` and :meth:`~MemcachedCache.dec` are atomic.

In a Flask app that also uses :class:`mcpool.flask.MemcachePool`, the cache
uses that extension's pool: one pool and one configuration (``MCPOOL_*``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import pylibmc

try:
    import cachelib
except ImportError as exc:
    raise ImportError(
        f"mcpool.cachelib needs cachelib, which could not be imported ({exc}): "
        "install it with pip install 'mcpool[cachelib]'"
    ) from exc

from .client import DEFAULT_TIMEOUT, Client, is_unavailable
from .clientpool import ClientPool
from .errors import ServerUnavailable, ValueTooLarge
from .keys import MAX_KEY_LENGTH, safe_key, wire_prefix
from .threadmapped import ThreadMappedPool

if TYPE_CHECKING:
    from flask import Flask

    _Base = cachelib.BaseCache
else:
    # Flask-Caching builds backends that subclass its own BaseCache through
    # their factory() (see MemcachedCache.factory); without Flask-Caching the
    # class is a plain cachelib backend.
    try:
        from flask_caching.backends.base import BaseCache as _Base
    except ImportError:
        _Base = cachelib.BaseCache

__all__ = ["DEFAULT_POOL_SIZE", "MemcachedCache"]

#: Clients in the pool :class:`MemcachedCache` builds from server addresses:
#: as many as the threads of a process that use the cache at once.
DEFAULT_POOL_SIZE = 10

#: memcached reads an expiry over 30 days as a Unix time, not as seconds.
_LONGEST_RELATIVE_EXPIRY = 30 * 24 * 60 * 60

#: libmemcached takes an ``incr`` step as a 32-bit number (pylibmc raises
#: OverflowError beyond 2**31 - 1).
_LARGEST_INCR = 2**31 - 1

#: Attempts of an inc/dec whose key other clients keep creating or changing
#: at the same moment, before it gives up and returns ``None``. Each failed
#: attempt means another client's change went through.
_COUNTER_ATTEMPTS = 1000

_EXTENSION_KEY = "mcpool"
_OWN_POOL_KEY = "mcpool.cachelib"


class _PooledClient:
    """The memcached calls of a pylibmc client; each call reserves a pooled
    client for just that call.

    It is :attr:`MemcachedCache._client`, the attribute where cachelib keeps
    its client (a ``pylibmc.Client`` before cachelib 0.15, a
    ``pylibmc.ClientPool`` since): code that reaches for it finds the client
    methods it used (``_client.set(...)``) and the pool's ``reserve()``.
    It defines exactly those names; any other attribute is an
    AttributeError.
    """

    __slots__ = ("_pool", "_block")

    def __init__(self, pool: Any, block: bool) -> None:
        self._pool = pool
        self._block = block

    def reserve(
        self, block: bool | None = None, timeout: float | None = None
    ) -> AbstractContextManager[Any]:
        """Reserve a client of the pool for a ``with`` block, as the pool does;
        *block* defaults to the cache's ``pool_blocking``."""
        reservation: AbstractContextManager[Any] = self._pool.reserve(
            self._block if block is None else block, timeout
        )
        return reservation

    def __repr__(self) -> str:
        return f"<mcpool.cachelib pooled client of {self._pool!r}>"


def _forward(name: str) -> Callable[..., Any]:
    def method(self: _PooledClient, *args: Any, **kwargs: Any) -> Any:
        with self.reserve() as mc:
            return getattr(mc, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"``{name}`` on a client reserved for this call."
    return method


for _name in (
    "add",
    "append",
    "cas",
    "decr",
    "delete",
    "delete_multi",
    "flush_all",
    "get",
    "get_multi",
    "get_stats",
    "gets",
    "incr",
    "prepend",
    "replace",
    "set",
    "set_multi",
    "touch",
):
    setattr(_PooledClient, _name, _forward(_name))
del _name


def _parse_servers(servers: str | Iterable[str]) -> list[str]:
    parts = servers.split(",") if isinstance(servers, str) else list(servers)
    addresses = [str(part).strip() for part in parts if str(part).strip()]
    if not addresses:
        raise ValueError(f"no memcached server address in {servers!r}")
    return addresses


class MemcachedCache(_Base):
    """A cachelib cache on memcached, through a pool of :class:`mcpool.Client`.

    :param servers: ``"host:port"`` addresses (a list, or one comma-separated
        string; ``None`` for ``127.0.0.1:11211``), from which a
        :class:`~mcpool.ClientPool` of *pool_size* :class:`mcpool.Client`
        clones is built; or a ready pool (:class:`~mcpool.ClientPool`,
        :class:`~mcpool.ThreadMappedPool`), used as it is; or a pylibmc
        client, cloned into a pool of *pool_size*.
    :param default_timeout: seconds (or a :class:`~datetime.timedelta`) a
        value lives when :meth:`set` is given no timeout; 0 is forever.
    :param key_prefix: put in front of every key; it must be a valid
        memcached key prefix.
    :param pool_size: the most clients (connections per server) at once.
    :param pool_blocking: wait for a free client (up to *pool_timeout*)
        when all are busy; ``False`` raises :class:`~mcpool.PoolTimeout` at
        once. Either way, running out raises :class:`~mcpool.PoolTimeout`
        (a :class:`queue.Empty`).
    :param ignore_delete_many_errors: ``False`` makes :meth:`delete_many`
        raise :class:`RuntimeError` when a key could not be deleted.
    :param check_connection: ask each server for its statistics now, and
        raise :class:`RuntimeError` if one does not answer.
    :param memcache_client_lib: cachelib's choice of binding; only
        ``"pylibmc"`` (or ``None``) is possible here.
    :param pool_timeout: seconds to wait for a free client.
    :param server_timeout: seconds a server may take to answer before it
        counts as unavailable (:class:`mcpool.Client`'s *timeout*).
    :param behaviors: libmemcached behaviours for the clients.
    :param binary: use the binary protocol (on by default with SASL).
    :param username: SASL user name.
    :param password: SASL password.
    :raises mcpool.InvalidKey: *key_prefix* is not a valid key prefix.
    :raises TypeError: *servers* is none of the above.
    :raises RuntimeError: *check_connection* and a server does not answer.

    Keys: a key that is a valid memcached key with its prefix, and has no
    ``~``, is stored as *key_prefix* + key, where any client can read it.
    Any other text is stored under :func:`mcpool.safe_key` of it (a readable
    part, ``~`` and a digest), so it never lands on another key's value.

    Expiry: timeouts up to 30 days are sent as seconds, longer ones as the
    Unix time they end at, since memcached reads more than 30 days of
    seconds as a Unix time. (cachelib sends every timeout as a Unix time,
    which a clock difference between client and server shifts.)

    :attr:`pool` is the pool; ``_client`` (where cachelib keeps its client)
    is an object with the client's methods, each call reserving a client.

    >>> cache = MemcachedCache(["127.0.0.1:11211"], key_prefix="app:")
    >>> cache.set("greeting", "hello", timeout=60)
    True
    >>> cache.inc("visits")
    1

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        servers: Any = None,
        default_timeout: int | timedelta = 300,
        key_prefix: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        pool_blocking: bool = True,
        ignore_delete_many_errors: bool = True,
        check_connection: bool = False,
        memcache_client_lib: str | None = None,
        *,
        pool_timeout: float = 2.0,
        server_timeout: float = DEFAULT_TIMEOUT,
        behaviors: Mapping[str, Any] | None = None,
        binary: bool | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        cachelib.BaseCache.__init__(self, default_timeout)
        self.ignore_delete_many_errors = ignore_delete_many_errors
        if memcache_client_lib not in (None, "pylibmc"):
            raise ValueError(
                f"memcache_client_lib={memcache_client_lib!r}: mcpool's cache runs "
                "on pylibmc only; leave memcache_client_lib out"
            )
        self.key_prefix = key_prefix
        if isinstance(servers, (ClientPool, ThreadMappedPool)):
            pool: Any = servers
        elif isinstance(servers, pylibmc.Client):
            pool = ClientPool(
                servers, pool_size, timeout=pool_timeout, name="mcpool.cachelib"
            )
        elif servers is None or isinstance(servers, (str, list, tuple)):
            client_behaviors = dict(behaviors or {})
            # Let dec() and the counters memcached's incr cannot handle use
            # compare-and-swap (gets/cas), which needs this behaviour.
            client_behaviors.setdefault("cas", True)
            master = Client(
                _parse_servers(servers or ["127.0.0.1:11211"]),
                behaviors=client_behaviors,
                binary=binary,
                username=username,
                password=password,
                timeout=server_timeout,
            )
            pool = ClientPool(
                master, pool_size, timeout=pool_timeout, name="mcpool.cachelib"
            )
        else:
            raise TypeError(
                "servers must be a list of 'host:port' addresses, an "
                "mcpool.ClientPool or ThreadMappedPool, or a pylibmc client; "
                f"got {type(servers).__name__}"
            )
        #: The pool each operation reserves a client from.
        self.pool = pool
        self._client = _PooledClient(pool, pool_blocking)
        self._client_context: Callable[[], AbstractContextManager[Any]] = partial(
            pool.reserve, pool_blocking
        )
        if check_connection:
            self._check_connection()

    # -- configuration ---------------------------------------------------

    @property
    def key_prefix(self) -> str | None:
        """The prefix put in front of every key (``None``: no prefix)."""
        return self._key_prefix

    @key_prefix.setter
    def key_prefix(self, prefix: str | None) -> None:
        checked = wire_prefix(prefix, "key_prefix")
        if isinstance(checked, bytes):
            raise TypeError(f"key_prefix must be str, not bytes ({prefix!r})")
        self._prefix = checked
        self._key_prefix = prefix

    @classmethod
    def factory(cls, *args: Any, **kwargs: Any) -> MemcachedCache:
        """Build the cache for Flask-Caching's ``CACHE_TYPE``.

        Flask-Caching calls ``factory(app, config, args, kwargs)``, with
        ``args`` from ``CACHE_ARGS`` and ``kwargs`` holding
        ``default_timeout`` (``CACHE_DEFAULT_TIMEOUT``),
        ``ignore_delete_many_errors`` (``CACHE_IGNORE_ERRORS``) and
        ``CACHE_OPTIONS``. The servers come from ``CACHE_MEMCACHED_SERVERS``
        and the prefix from ``CACHE_KEY_PREFIX``; with SASL,
        ``CACHE_MEMCACHED_USERNAME`` and ``CACHE_MEMCACHED_PASSWORD``.

        When the app has :class:`mcpool.flask.MemcachePool` (set up before
        the cache), the cache uses the extension's pool and its ``MCPOOL_*``
        configuration; ``CACHE_MEMCACHED_SERVERS`` must then be unset or
        name the same servers.

        :raises ValueError: ``CACHE_MEMCACHED_SERVERS`` names other servers
            than the app's ``MemcachePool``.

        >>> app.config["CACHE_TYPE"] = "mcpool.cachelib.MemcachedCache"
        >>> cache = Cache(app)
        """
        if len(args) == 4 and not kwargs:
            app, config, cache_args, options = args
        else:
            # Flask-Caching 2.5 and later call a class whose import path
            # contains "cachelib" with CACHE_ARGS and the options alone,
            # without the app, and this module's path does contain it. The
            # app and config are those of the Cache.init_app() running now.
            app, config = _app_being_set_up()
            cache_args, options = list(args), dict(kwargs)
        return cls._for_flask_app(app, config, list(cache_args), dict(options))

    @classmethod
    def _for_flask_app(
        cls,
        app: Flask,
        config: Mapping[str, Any],
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> MemcachedCache:
        servers = config.get("CACHE_MEMCACHED_SERVERS")
        state = app.extensions.get(_EXTENSION_KEY)
        if state is not None:
            if servers is not None and _parse_servers(servers) != list(state.servers):
                raise ValueError(
                    f"CACHE_MEMCACHED_SERVERS is {servers!r}, but the app's "
                    f"MemcachePool uses {state.servers!r} (MCPOOL_SERVERS): the "
                    "cache shares the extension's pool, so remove "
                    "CACHE_MEMCACHED_SERVERS and configure the servers once, "
                    "with MCPOOL_SERVERS"
                )
            args.append(state.pool)
        else:
            # Recorded for MemcachePool.init_app(), which refuses to set up a
            # second pool for this app after it.
            app.extensions[_OWN_POOL_KEY] = True
            args.append(servers)
            for key, option in (
                ("CACHE_MEMCACHED_USERNAME", "username"),
                ("CACHE_MEMCACHED_PASSWORD", "password"),
            ):
                if config.get(key) is not None:
                    kwargs.setdefault(option, config[key])
        kwargs["key_prefix"] = config.get("CACHE_KEY_PREFIX")
        # Flask-Caching 2.5 passes CACHE_IGNORE_ERRORS in kwargs; before
        # that each backend read it from the config.
        kwargs.setdefault(
            "ignore_delete_many_errors", bool(config.get("CACHE_IGNORE_ERRORS"))
        )
        return cls(*args, **kwargs)

    def _check_connection(self) -> None:
        try:
            with self._client_context() as mc:
                mc.get_stats()
        except pylibmc.Error as exc:
            raise RuntimeError(
                f"could not connect to memcached server(s) of {self.pool!r}: {exc}"
            ) from exc

    # -- keys and timeouts -----------------------------------------------

    def _wire_key(self, key: str) -> str:
        """The memcached key for *key*: the prefixed key itself when that is
        valid and has no ``~``, else :func:`~mcpool.safe_key` of it."""
        if type(key) is not str:
            if not isinstance(key, str):
                raise TypeError(f"cache keys are str, not {type(key).__name__}")
            key = str.__str__(key)
        full = self._prefix + key
        # Passed keys never contain "~" and mapped keys always do: no key a
        # caller chooses can land on the mapped key of another one.
        if (
            0 < len(full) <= MAX_KEY_LENGTH
            and full.isascii()
            and full.isprintable()
            and " " not in full
            and "~" not in key
        ):
            return full
        return safe_key(key, prefix=self._prefix)

    def _normalize_timeout(self, timeout: int | timedelta | None) -> int:
        seconds = super()._normalize_timeout(timeout)
        if isinstance(seconds, timedelta):  # cachelib before 0.17
            seconds = seconds.total_seconds()
        seconds = math.ceil(seconds)
        if seconds > _LONGEST_RELATIVE_EXPIRY:
            return int(time.time()) + seconds
        return seconds

    # -- reads: a server that does not answer is a miss --------------------

    def get(self, key: str) -> Any:
        """The value of *key*, or ``None`` if it is missing or its server
        is unavailable."""
        wire = self._wire_key(key)
        with self._client_context() as mc:
            return mc.get(wire)

    def get_dict(self, *keys: str) -> dict[str, Any]:
        """``{key: value or None}`` for *keys*, from one request per server."""
        wires = {self._wire_key(key): key for key in keys}
        with self._client_context() as mc:
            found = mc.get_multi(list(wires))
        result = dict.fromkeys(keys)
        for wire, value in found.items():
            result[wires[wire]] = value
        return result

    def get_many(self, *keys: str) -> list[Any]:
        """The values of *keys*, in order; ``None`` for each missing one."""
        found = self.get_dict(*keys)
        return [found[key] for key in keys]

    def has(self, key: str) -> bool:
        """Whether *key* holds a value, without reading it (``False`` when
        its server is unavailable)."""
        wire = self._wire_key(key)
        try:
            with self._client_context() as mc:
                # An empty append succeeds exactly when the key exists, and
                # sends no value back.
                return bool(mc.append(wire, ""))
        except ServerUnavailable:
            return False

    # -- writes: a server that does not answer is a False ------------------

    def set(self, key: str, value: Any, timeout: int | timedelta | None = None) -> bool:
        """Store *value*; ``False`` if it was not stored (server
        unavailable, value over the item size limit)."""
        wire = self._wire_key(key)
        expiry = self._normalize_timeout(timeout)
        try:
            with self._client_context() as mc:
                return bool(mc.set(wire, value, expiry))
        except (ServerUnavailable, ValueTooLarge):
            return False

    def add(self, key: str, value: Any, timeout: int | timedelta | None = None) -> bool:
        """Store *value* unless *key* holds one; ``False`` if not stored."""
        wire = self._wire_key(key)
        expiry = self._normalize_timeout(timeout)
        try:
            with self._client_context() as mc:
                return bool(mc.add(wire, value, expiry))
        except (ServerUnavailable, ValueTooLarge):
            return False

    def set_many(
        self, mapping: Mapping[str, Any], timeout: int | timedelta | None = None
    ) -> list[Any]:
        """Store every item; return the keys that were stored."""
        wires = {key: self._wire_key(key) for key in mapping}
        expiry = self._normalize_timeout(timeout)
        values = {wires[key]: value for key, value in mapping.items()}
        try:
            with self._client_context() as mc:
                not_stored = set(mc.set_multi(values, expiry))
        except ServerUnavailable as exc:
            not_stored = set(exc.keys)
        except ValueTooLarge as exc:
            not_stored = set(exc.failed)
        return [key for key in mapping if wires[key] not in not_stored]

    def delete(self, key: str) -> bool:
        """Delete *key*; ``True`` if it held a value, ``False`` if it did not
        or its server is unavailable."""
        wire = self._wire_key(key)
        try:
            with self._client_context() as mc:
                return bool(mc.delete(wire))
        except ServerUnavailable:
            return False

    def delete_many(self, *keys: str) -> list[Any]:
        """Delete *keys*; return those that hold no value now.

        A key whose server is unavailable was not deleted.

        :raises RuntimeError: some key was not deleted, and the cache was
            made with ``ignore_delete_many_errors=False``.
        """
        deleted: list[Any] = []
        failed: list[Any] = []
        with self._client_context() as mc:
            for key in keys:
                try:
                    mc.delete(self._wire_key(key))  # False: it was not there
                except ServerUnavailable:
                    failed.append(key)
                else:
                    deleted.append(key)
        if failed and not self.ignore_delete_many_errors:
            raise RuntimeError(
                f"Failed to delete keys: {failed!r}: their memcached server is "
                "unavailable"
            )
        return deleted

    def clear(self) -> bool:
        """Delete every key on every server (all prefixes); ``False`` if a
        server is unavailable."""
        try:
            with self._client_context() as mc:
                return bool(mc.flush_all())
        except pylibmc.Error as exc:
            # flush_all goes to every server: SomeErrors says some did not
            # answer (libmemcached's MEMCACHED_SOME_ERRORS).
            if is_unavailable(exc) or isinstance(exc, pylibmc.SomeErrors):
                return False
            raise

    # -- counters --------------------------------------------------------

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Add *delta* to the integer at *key* (0 if missing), atomically;
        the new value, or ``None`` if its server is unavailable.

        :raises TypeError: *key* holds a value that is not an integer.
        """
        return self._count(key, delta)

    def dec(self, key: str, delta: int = 1) -> int | None:
        """Subtract *delta* from the integer at *key* (0 if missing),
        atomically, below zero too; as :meth:`inc`."""
        return self._count(key, -delta)

    def _count(self, key: str, delta: int) -> int | None:
        wire = self._wire_key(key)
        try:
            with self._client_context() as mc:
                for _ in range(_COUNTER_ATTEMPTS):
                    result = self._count_once(mc, key, wire, delta)
                    if result is not None:
                        return result
        except (ServerUnavailable, ValueTooLarge):
            pass
        return None

    def _count_once(self, mc: Any, key: str, wire: str, delta: int) -> int | None:
        """One attempt at adding *delta*; ``None`` when another client
        changed the key meanwhile and the caller should try again."""
        # memcached's incr is atomic and takes one round trip, but counts on
        # unsigned 64 bits and its decr stops at 0, where cachelib's counters
        # go negative: incr serves a step it can take exactly, and the rest
        # is a compare-and-swap. In the binary protocol, libmemcached 1.0
        # answers an incr of a value that is not a counter by marking the
        # server failed, so there only compare-and-swap is used.
        if 0 <= delta <= _LARGEST_INCR and not mc.binary:
            try:
                return int(mc.incr(wire, delta))
            except pylibmc.NotFound:
                if mc.add(wire, delta, self._normalize_timeout(None)):
                    return delta
                return None
            except pylibmc.ClientError:
                pass  # not an unsigned counter (negative, text, too large)
        if not mc.get_behaviors().get("cas"):
            # A pool whose clients lack compare-and-swap: cachelib's own
            # read, add and write, which is not atomic.
            value = self._as_counter(key, mc.get(wire)) + delta
            mc.set(wire, value, self._normalize_timeout(None))
            return value
        # Bytes, held here: pylibmc's own gets loses a str key's encoding
        # under concurrency (see mcpool.Client.gets).
        current, cas_id = mc.gets(wire.encode("utf-8"))
        if current is None:
            stored = mc.add(wire, delta, self._normalize_timeout(None))
            return delta if stored else None
        value = self._as_counter(key, current) + delta
        try:
            if mc.cas(wire, value, cas_id, self._normalize_timeout(None)):
                return value
        except pylibmc.NotFound:
            pass  # deleted since the read: start again from nothing
        return None

    @staticmethod
    def _as_counter(key: str, value: Any) -> int:
        if value is None:
            return 0
        if isinstance(value, int):
            return int(value)
        raise TypeError(
            f"inc/dec of {key!r}: it holds a {type(value).__name__}, not an "
            "integer; set it to an int first"
        )

    def __repr__(self) -> str:
        return f"<mcpool.cachelib.MemcachedCache prefix={self._prefix!r} {self.pool!r}>"


def _app_being_set_up() -> tuple[Flask, Mapping[str, Any]]:
    """The app and config of the ``Cache.init_app()`` that calls
    :meth:`MemcachedCache.factory` without them (Flask-Caching 2.5 and later)."""
    from flask import Flask

    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "_set_cache":
            app = frame.f_locals.get("app")
            config = frame.f_locals.get("config")
            if isinstance(app, Flask) and isinstance(config, Mapping):
                return app, config
        frame = frame.f_back  # type: ignore[assignment]
    raise TypeError(
        "MemcachedCache.factory(app, config, args, kwargs) builds the cache for "
        "Flask-Caching; it was called without them, outside Flask-Caching's "
        "Cache.init_app(). To make a cache yourself, call MemcachedCache(...)"
    )
