"""Flask extension: one pool per app, one client per app context.

.. code-block:: python

    from flask import Flask
    from mcpool.flask import MemcachePool

    memcache = MemcachePool()

    def create_app():
        app = Flask(__name__)
        app.config["MCPOOL_SERVERS"] = "127.0.0.1:11211,127.0.0.1:11212"
        memcache.init_app(app)

        @app.route("/")
        def index():
            mc = memcache.client       # nothing reserved yet
            mc.add("hits", 0)          # the first use reserves a client
            return f"{mc.incr('hits')} hits"

        return app

:attr:`MemcachePool.client` is the current app context's client: reserved
from the current app's pool the first time it is used in the context, and
released when the context is torn down. A context that never touches
memcached holds nothing. Each app given to :meth:`MemcachePool.init_app` gets
its own master client and pool, kept in ``app.extensions["mcpool"]``; the
extension object holds no app and no request state, so one object serves
every app of the process and every thread.

A streaming body runs after the view returns, when Flask has torn the
context down. A generator that uses the client must keep the context alive
with :func:`flask.stream_with_context` and take ``memcache.client`` inside
the generator, or the app must be served through
:class:`~mcpool.PoolMiddleware` (``MCPOOL_WSGI_MIDDLEWARE = True``), which
holds the request's client until the server closes the response; the
extension then uses the middleware's client.

The ``flask mcpool`` command group has ``stats`` (the pool's and each
server's statistics; ``--url`` reads a running app's, served at
``MCPOOL_STATS_URL``) and ``ping`` (does each server answer, and how fast).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import time
import urllib.request
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import pylibmc

try:
    from flask import Flask
except ImportError as exc:
    raise ImportError(
        f"mcpool.flask needs Flask, which could not be imported ({exc}): "
        "install it with pip install 'mcpool[flask]'"
    ) from exc

import click  # a dependency of Flask's
from flask import (
    Response,
    current_app,
    g,
    has_app_context,
    has_request_context,
    request,
)
from flask.cli import AppGroup

from .client import DEFAULT_TIMEOUT, Client
from .clientpool import ClientPool
from .errors import ServerUnavailable
from .health import HealthCheck
from .histogram import Histogram
from .middleware import PoolMiddleware, RequestClient
from .pool import Reservation
from .servers import ask_each_server, parse_server, probe, server_stat_lines
from .statsapp import stats_document
from .telemetry import export_metrics
from .threadmapped import ThreadMappedPool

__all__ = [
    "CONFIG_DEFAULTS",
    "ConfigWarning",
    "MemcachePool",
    "PoolState",
    "StartupCheckWarning",
    "cli",
    "config_from_env",
]

#: The ``app.config`` keys the extension reads, with their defaults. Each is
#: set with ``setdefault`` by :meth:`MemcachePool.init_app`, so values set
#: before it (from a file, from the environment) win.
CONFIG_DEFAULTS: dict[str, Any] = {
    "MCPOOL_SERVERS": ["127.0.0.1:11211"],
    "MCPOOL_SAFE_CLIENT": True,
    "MCPOOL_SERVER_TIMEOUT": DEFAULT_TIMEOUT,
    "MCPOOL_BINARY": None,
    "MCPOOL_BEHAVIORS": {},
    "MCPOOL_USERNAME": None,
    "MCPOOL_PASSWORD": None,
    "MCPOOL_CLIENT_OPTIONS": {},
    "MCPOOL_POOL": "queue",
    "MCPOOL_POOL_SIZE": 10,
    "MCPOOL_POOL_TIMEOUT": 2.0,
    "MCPOOL_MAX_WAITING": None,
    "MCPOOL_POOL_OPTIONS": {},
    "MCPOOL_WSGI_MIDDLEWARE": False,
    "MCPOOL_ENVIRON_KEY": "mcpool.client",
    "MCPOOL_CHECK_ON_START": "off",
    "MCPOOL_CHECK_TIMEOUT": 1.0,
    "MCPOOL_STATS_URL": None,
    "MCPOOL_METRICS": None,
}

POOL_KINDS = ("queue", "thread")
CHECK_MODES = ("off", "warn", "fail")

logger = logging.getLogger("mcpool.flask")

#: What each key takes from the environment besides a string: an environment
#: value that parses as JSON of one of these types is used parsed, any other
#: value as the string it is (which the extension parses in turn: servers
#: comma-separated, "true"/"off", numbers). Keys not listed take strings only,
#: so that a password "1234" stays text.
_ENV_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "MCPOOL_SERVERS": (list,),
    "MCPOOL_SAFE_CLIENT": (bool,),
    "MCPOOL_SERVER_TIMEOUT": (int, float),
    "MCPOOL_BINARY": (bool,),
    "MCPOOL_BEHAVIORS": (dict,),
    "MCPOOL_CLIENT_OPTIONS": (dict,),
    "MCPOOL_POOL_SIZE": (int,),
    "MCPOOL_POOL_TIMEOUT": (int, float),
    "MCPOOL_POOL_OPTIONS": (dict,),
    "MCPOOL_WSGI_MIDDLEWARE": (bool,),
    "MCPOOL_CHECK_TIMEOUT": (int, float),
}

#: Environment variables with the prefix that are not app config: the ones
#: mcpool's own set-up script reads (run.sh), which may be set in the
#: environment the test suite runs in.
_NOT_CONFIG = frozenset({"MCPOOL_PYLIBMC", "MCPOOL_CONSTRAINTS"})

_ENV_PREFIX = "MCPOOL_"
_EXTENSION_KEY = "mcpool"
# Set in app.extensions by config_from_env: the app reads its MCPOOL_* from
# an environment on purpose, and init_app need not look at os.environ.
_FROM_ENV_KEY = "mcpool.from_env"
_G_KEY = "_mcpool_client"


# -- finding the current contexts ---------------------------------------------
#
# The extension reads three things of the current contexts: the app context's
# app and g, and the request's environ. Flask keeps the contexts in two
# private context variables; reading one directly costs 60 ns, each access
# through Flask's public proxies 800 ns, and a request would make five of
# them. The variables are used where Flask has them (Flask 2.3 to 3.1 do);
# otherwise stand-ins built on the public API take their place, with the same
# ``get(None)``: the current context, or None.


class _AppContextView:
    """An app context's app and g, as the public API gives them."""

    __slots__ = ("app", "g")

    def __init__(self, app: Flask, g: Any) -> None:
        self.app = app
        self.g = g


class _RequestContextView:
    """A request context's request, as the public API gives it."""

    __slots__ = ("request",)

    def __init__(self, request: Any) -> None:
        self.request = request


class _PublicAppContext:
    """``flask.globals._cv_app``'s ``get(None)`` through Flask's public API."""

    @staticmethod
    def get(default: None) -> _AppContextView | None:
        if not has_app_context():
            return default
        return _AppContextView(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            g._get_current_object(),
        )


class _PublicRequestContext:
    """``flask.globals._cv_request``'s ``get(None)`` through Flask's public API."""

    @staticmethod
    def get(default: None) -> _RequestContextView | None:
        if not has_request_context():
            return default
        return _RequestContextView(request._get_current_object())  # type: ignore[attr-defined]


def _context_variables() -> tuple[Any, Any]:
    """Flask's context variables, or the public API's stand-ins for them."""
    try:
        from flask.globals import _cv_app, _cv_request
    except ImportError:
        return _PublicAppContext(), _PublicRequestContext()
    if isinstance(_cv_app, ContextVar) and isinstance(_cv_request, ContextVar):
        return _cv_app, _cv_request
    return _PublicAppContext(), _PublicRequestContext()


_app_context_var, _request_context_var = _context_variables()


class ConfigWarning(UserWarning):
    """An ``MCPOOL_*`` name that the extension does not know, or an
    environment variable that it was not asked to read.

    .. versionadded:: 0.1
    """


def config_from_env(
    app: Flask, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Set *app*'s ``MCPOOL_*`` config from environment variables of the same names.

    Call it in the app factory before :meth:`MemcachePool.init_app`, where
    it overrides what the config had (put test config after it). Like
    Flask's :meth:`~flask.Config.from_prefixed_env`, a value that parses as
    JSON is used parsed, if it has a type the key takes (``8``, ``true``,
    ``{"tcp_nodelay": true}``, ``["a:11211", "b:11211"]``); anything else
    is kept as the string it is, which the extension parses in turn
    (``127.0.0.1:11211,127.0.0.1:11212``, ``off``). Text keys
    (``MCPOOL_USERNAME``, ``MCPOOL_PASSWORD``, ``MCPOOL_POOL``, ...) are never
    parsed. An unknown ``MCPOOL_*`` variable warns with the nearest valid
    name (:class:`ConfigWarning`).

    :param environ: where to read; :data:`os.environ` if not given.
    :returns: the keys set, with their values.
    :raises RuntimeError: :meth:`~MemcachePool.init_app` already ran for
        *app*, so the values would have no effect.

    >>> def create_app():  # doctest: +SKIP
    ...     app = Flask(__name__)
    ...     config_from_env(app)  # MCPOOL_SERVERS=10.0.0.1:11211 flask run
    ...     memcache.init_app(app)
    ...     return app

    .. versionadded:: 0.1
    """
    if _EXTENSION_KEY in app.extensions:
        raise RuntimeError(
            f"mcpool is already set up for the app {app.name!r}: call "
            "config_from_env(app) before memcache.init_app(app)"
        )
    if environ is None:
        environ = os.environ
    loaded: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(_ENV_PREFIX) or name in _NOT_CONFIG:
            continue
        if name not in CONFIG_DEFAULTS:
            _warn_unknown(name, "environment variable", stacklevel=3)
            continue
        loaded[name] = _env_value(name, environ[name])
    app.config.update(loaded)
    app.extensions[_FROM_ENV_KEY] = True
    return loaded


def _env_value(name: str, text: str) -> Any:
    types = _ENV_JSON_TYPES.get(name)
    if types is None:
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    # bool is an int: MCPOOL_POOL_SIZE=true stays the string, to be refused.
    if isinstance(value, types) and (bool in types or not isinstance(value, bool)):
        return value
    return text


def _warn_unknown(name: str, what: str, stacklevel: int) -> None:
    close = difflib.get_close_matches(name, CONFIG_DEFAULTS, n=1)
    hint = f"did you mean {close[0]}?" if close else "see CONFIG_DEFAULTS"
    warnings.warn(
        f"unknown {what} {name}: mcpool ignores it ({hint})",
        ConfigWarning,
        stacklevel=stacklevel,
    )


def _check_names(app: Flask) -> None:
    """Warn of unknown ``MCPOOL_*`` config keys, and, unless the app read
    its config from the environment, of ``MCPOOL_*`` variables there that the
    config does not follow: they would otherwise be ignored without a word."""
    for name in app.config:
        if name.startswith(_ENV_PREFIX) and name not in CONFIG_DEFAULTS:
            _warn_unknown(name, "config key", stacklevel=4)
    if app.extensions.get(_FROM_ENV_KEY):
        return
    for name in sorted(os.environ):
        if not name.startswith(_ENV_PREFIX) or name in _NOT_CONFIG:
            continue
        if name not in CONFIG_DEFAULTS:
            _warn_unknown(name, "environment variable", stacklevel=4)
            continue
        in_config = app.config.get(name, CONFIG_DEFAULTS[name])
        if _env_value(name, os.environ[name]) != in_config:
            warnings.warn(
                f"the environment sets {name}={os.environ[name]!r}, but the "
                f"app's config has {in_config!r}: the extension "
                "reads app.config only; call mcpool.flask.config_from_env(app) "
                "before init_app to take MCPOOL_* from the environment",
                ConfigWarning,
                stacklevel=3,
            )


class StartupCheckWarning(UserWarning):
    """No memcached server answered the start-up check
    (``MCPOOL_CHECK_ON_START = "warn"``).

    .. versionadded:: 0.1
    """


class PoolState:
    """One app's memcached set-up, kept in ``app.extensions["mcpool"]``.

    :ivar pool: the app's pool (:class:`~mcpool.ClientPool` for
        ``MCPOOL_POOL = "queue"``, :class:`~mcpool.ThreadMappedPool` for
        ``"thread"``).
    :ivar master: the master client the pool clones.
    :ivar servers: the server addresses, as given to the client.
    :ivar environ_key: where :class:`~mcpool.PoolMiddleware` puts the
        request's client.
    """

    def __init__(
        self,
        pool: ClientPool[pylibmc.Client],
        master: pylibmc.Client,
        servers: list[str],
        environ_key: str,
        make_client: Callable[[list[str]], pylibmc.Client],
    ) -> None:
        self.pool = pool
        self.master = master
        self.servers = servers
        self.environ_key = environ_key
        self.make_client = make_client
        #: judges each scrape of ``MCPOOL_STATS_URL`` (the window since the
        #: previous one)
        self.health = HealthCheck(pool)

    def __repr__(self) -> str:
        return f"<PoolState servers={self.servers!r} pool={self.pool!r}>"


class MemcachePool:
    """The Flask extension: a memcached client pool per app.

    :param app: an app to set up now; with an app factory leave it out and
        call :meth:`init_app` in the factory.

    >>> memcache = MemcachePool()
    >>> memcache.init_app(app)  # doctest: +SKIP
    >>> with app.app_context():  # doctest: +SKIP
    ...     memcache.client.set("k", "v")
    True
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Give *app* its own master client and pool, from its ``MCPOOL_*`` config.

        Missing config keys are set to :data:`CONFIG_DEFAULTS`. Registers the
        context teardown that releases the context's client, the
        ``flask mcpool`` commands, and, with ``MCPOOL_WSGI_MIDDLEWARE``,
        wraps ``app.wsgi_app`` in :class:`~mcpool.PoolMiddleware`.

        :raises ValueError: a config value is malformed; the message names
            the key.
        :raises RuntimeError: ``init_app`` was already called for *app*, or
            Flask-Caching's :class:`mcpool.cachelib.MemcachedCache` was set
            up for *app* before it (and made a pool of its own).

        >>> def create_app():  # doctest: +SKIP
        ...     app = Flask(__name__)
        ...     app.config["MCPOOL_SERVERS"] = "10.0.0.1:11211,10.0.0.2:11211"
        ...     memcache.init_app(app)
        ...     return app
        """
        if _EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"mcpool is already set up for the app {app.name!r}; call "
                "init_app once per app"
            )
        if app.extensions.get("mcpool.cachelib"):
            raise RuntimeError(
                f"Flask-Caching's mcpool.cachelib.MemcachedCache was set up for the "
                f"app {app.name!r} before MemcachePool, and made a pool of its own: "
                "call memcache.init_app(app) before Cache(app) (or "
                "cache.init_app(app)), and the cache uses the extension's pool"
            )
        _check_names(app)
        for name, value in CONFIG_DEFAULTS.items():
            # Copies, so that no app can change another's defaults in place.
            app.config.setdefault(name, _copy(value))
        state = _state_from_config(app.config)
        check_mode = app.config["MCPOOL_CHECK_ON_START"]
        if check_mode not in CHECK_MODES:
            raise ValueError(
                "MCPOOL_CHECK_ON_START must be one of "
                f"{', '.join(map(repr, CHECK_MODES))}, got {check_mode!r}"
            )
        if check_mode != "off":
            check_timeout = _parse_number(app.config, "MCPOOL_CHECK_TIMEOUT", float)
            try:
                _check_servers(state, check_timeout, fail=check_mode == "fail")
            except BaseException:
                state.pool.close()
                raise
        export_metrics(state.pool, app.config["MCPOOL_METRICS"], "MCPOOL_METRICS")
        app.extensions[_EXTENSION_KEY] = state
        # Teardown functions run in the reverse order of registration: first
        # in the list runs last, after every other teardown function that may
        # still use the context's client.
        app.teardown_appcontext_funcs.insert(0, _release_context_client)
        app.cli.add_command(cli)
        stats_url = app.config["MCPOOL_STATS_URL"] or None
        if stats_url is not None:
            app.add_url_rule(stats_url, "mcpool_stats", _stats_view, methods=["GET"])
        if _parse_bool(app.config, "MCPOOL_WSGI_MIDDLEWARE"):
            app.wsgi_app = PoolMiddleware(  # type: ignore[method-assign]
                app.wsgi_app, state.pool, state.environ_key
            )

    @property
    def client(self) -> pylibmc.Client:
        """The current context's client, reserved on first use.

        The same object for the whole app context; released when the context
        is torn down (or, if :class:`~mcpool.PoolMiddleware` is installed for
        this app's pool, when the server closes the response).

        It is a :class:`~mcpool.RequestClient`, which has the client's
        methods and reserves the client when one is first called; to type
        checkers it is the ``pylibmc.Client`` it stands for (an
        :class:`mcpool.Client`, itself a ``pylibmc.Client``, unless
        ``MCPOOL_SAFE_CLIENT`` is off), so a misspelt method is an error.

        :raises RuntimeError: outside an app context, or for an app that
            :meth:`init_app` has not set up.

        >>> @app.get("/")  # doctest: +SKIP
        ... def index():
        ...     return memcache.client.get("greeting") or "hello"
        """
        app_context = _app_context_var.get(None)
        if app_context is None:
            raise _no_context("MemcachePool.client")
        state = app_context.app.extensions.get(_EXTENSION_KEY)
        if state is None:
            state = _state_of(app_context.app)  # raises, saying what to do
        request_context = _request_context_var.get(None)
        if request_context is not None:
            shared = request_context.request.environ.get(state.environ_key)
            if isinstance(shared, RequestClient) and shared.pool is state.pool:
                return shared  # type: ignore[return-value]
        # g's own dict: getattr(g, name, None) on a missing name raises and
        # catches an AttributeError inside flask, a microsecond per request.
        context_globals = app_context.g.__dict__
        context_client: RequestClient | None = context_globals.get(_G_KEY)
        if context_client is None or (
            context_client.released and request_context is not None
        ):
            # A released client with a request context active means the
            # context was torn down and pushed again with its request, as
            # stream_with_context does: this push gets a client of its own,
            # released by its own teardown. Without a request, a released
            # client is a use after the teardown, and raises when used.
            context_client = context_globals[_G_KEY] = RequestClient(state.pool)
        # Typed as the client it stands for (see above); no cast() here, a
        # call on every use.
        return context_client  # type: ignore[return-value]

    @property
    def pool(self) -> ClientPool[pylibmc.Client]:
        """The current app's pool (a :class:`~mcpool.ThreadMappedPool` for
        ``MCPOOL_POOL = "thread"``, which is a :class:`~mcpool.ClientPool`).

        :raises RuntimeError: outside an app context, or for an app that
            :meth:`init_app` has not set up.

        >>> memcache.pool.stats().max_size  # doctest: +SKIP
        10
        """
        return _current_state("MemcachePool.pool").pool

    def reserve(
        self, block: bool = True, timeout: float | None = None
    ) -> Reservation[pylibmc.Client]:
        """Reserve a client of the current app's pool for one ``with`` block.

        Independent of :attr:`client`: with a ``"queue"`` pool the block gets
        a client of its own and returns it on exit; with a ``"thread"`` pool
        it gets the thread's client, as every reserve in that thread does.

        >>> with memcache.reserve() as mc:  # doctest: +SKIP
        ...     mc.set("k", "v")

        :raises RuntimeError: outside an app context, or for an app that
            :meth:`init_app` has not set up.
        :raises mcpool.PoolTimeout: no client free within *timeout*.
        """
        pool = _current_state("MemcachePool.reserve()").pool
        return pool.reserve(block, timeout)

    @staticmethod
    def get_state(app: Flask) -> PoolState:
        """*app*'s :class:`PoolState`, without needing an app context.

        :raises RuntimeError: :meth:`init_app` was not called for *app*.

        >>> MemcachePool.get_state(app).pool.stats().in_use  # doctest: +SKIP
        0
        """
        return _state_of(app)


def _stats_view() -> Response:
    """The serving process's pool statistics, as :class:`~mcpool.StatsApp`
    serves them (``MCPOOL_STATS_URL``)."""
    state = _current_state("the mcpool stats view")
    body = json.dumps(stats_document(state.pool, state.health), default=str)
    response = Response(body, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def _state_of(app: Flask) -> PoolState:
    state = app.extensions.get(_EXTENSION_KEY)
    if state is None:
        raise RuntimeError(
            f"mcpool is not set up for the app {app.name!r}: call "
            "MemcachePool().init_app(app) in the app factory"
        )
    assert isinstance(state, PoolState)
    return state


def _no_context(what: str) -> RuntimeError:
    return RuntimeError(
        f"{what} needs an application context: use it in a view, a CLI "
        "command or inside 'with app.app_context():'; outside one, use "
        "MemcachePool.get_state(app).pool.reserve()"
    )


def _current_state(what: str) -> PoolState:
    app_context = _app_context_var.get(None)
    if app_context is None:
        raise _no_context(what)
    return _state_of(app_context.app)


def _release_context_client(exc: BaseException | None) -> None:
    # Teardown may run twice for one context (tests call
    # do_teardown_appcontext by hand before the context pops); release() is
    # idempotent. The released client stays in g, so that a use later in
    # this pop (an appcontext_tearing_down receiver) raises instead of
    # reserving a client that no teardown would return.
    app_context = _app_context_var.get(None)
    if app_context is None:
        return
    context_client: RequestClient | None = app_context.g.__dict__.get(_G_KEY)
    if context_client is not None:
        context_client.release(exc=exc)


# -- config -----------------------------------------------------------------


def _state_from_config(config: Mapping[str, Any]) -> PoolState:
    servers = _parse_servers(config["MCPOOL_SERVERS"])
    safe = _parse_bool(config, "MCPOOL_SAFE_CLIENT")
    binary = _parse_optional_bool(config, "MCPOOL_BINARY")
    behaviors = _parse_mapping(config, "MCPOOL_BEHAVIORS")
    client_options = _parse_mapping(config, "MCPOOL_CLIENT_OPTIONS")
    pool_options = _parse_mapping(config, "MCPOOL_POOL_OPTIONS")
    username = config["MCPOOL_USERNAME"] or None
    password = config["MCPOOL_PASSWORD"] or None
    if (username is None) != (password is None):
        raise ValueError("set both MCPOOL_USERNAME and MCPOOL_PASSWORD, or neither")
    if username is not None and binary is False:
        raise ValueError(
            "SASL authentication (MCPOOL_USERNAME) needs the binary protocol: "
            "leave MCPOOL_BINARY unset or set it to True"
        )
    if binary is None:
        binary = username is not None
    server_timeout = _parse_number(config, "MCPOOL_SERVER_TIMEOUT", float)
    if server_timeout <= 0:
        raise ValueError(
            f"MCPOOL_SERVER_TIMEOUT must be positive seconds, got {server_timeout}"
        )
    kind = config["MCPOOL_POOL"]
    if kind not in POOL_KINDS:
        raise ValueError(
            f"MCPOOL_POOL must be one of {', '.join(map(repr, POOL_KINDS))}, "
            f"got {kind!r}"
        )
    size = _parse_number(config, "MCPOOL_POOL_SIZE", int)
    if size < 1:
        raise ValueError(f"MCPOOL_POOL_SIZE must be at least 1, got {size}")
    timeout = _parse_number(config, "MCPOOL_POOL_TIMEOUT", float)
    if config["MCPOOL_MAX_WAITING"] not in (None, ""):
        max_waiting = _parse_number(config, "MCPOOL_MAX_WAITING", int)
        if max_waiting < 0:
            raise ValueError(f"MCPOOL_MAX_WAITING must be 0 or more, got {max_waiting}")
        pool_options.setdefault("max_waiting", max_waiting)
    environ_key = config["MCPOOL_ENVIRON_KEY"]

    def make_client(addresses: list[str]) -> pylibmc.Client:
        options: dict[str, Any] = {"binary": binary, **client_options}
        # Always a mapping: pylibmc 1.6.3 on Python 3.13 prints 31 ignored
        # exceptions for each client made with behaviors=None.
        if behaviors or options.get("behaviors") is None:
            options["behaviors"] = behaviors
        if username is not None:
            options["username"] = username
            options["password"] = password
        if safe:
            return Client(addresses, timeout=server_timeout, **options)
        return pylibmc.Client(addresses, **options)

    try:
        master = make_client(servers)
    except TypeError as exc:
        raise ValueError(
            f"MCPOOL_CLIENT_OPTIONS {client_options!r} do not fit the client: {exc}"
        ) from None
    try:
        pool = _make_pool(kind, master, size, timeout, pool_options)
    except TypeError as exc:
        raise ValueError(
            f"MCPOOL_POOL_OPTIONS {pool_options!r} do not fit the {kind!r} pool: {exc}"
        ) from None
    return PoolState(pool, master, servers, environ_key, make_client)


def _make_pool(
    kind: str,
    master: pylibmc.Client,
    size: int,
    timeout: float,
    options: dict[str, Any],
) -> ClientPool[pylibmc.Client]:
    if kind == "thread":
        # A client per thread, at most *size* bound at once; a thread that
        # finds them all bound waits up to *timeout*.
        return ThreadMappedPool(master, size, timeout=timeout, **options)
    return ClientPool(master, size, timeout=timeout, **options)


def _parse_servers(value: Any) -> list[str]:
    if isinstance(value, str):
        servers = [part.strip() for part in value.split(",")]
    elif isinstance(value, Sequence):
        servers = [str(part).strip() for part in value]
    else:
        raise ValueError(
            "MCPOOL_SERVERS must be a list of 'host:port' strings or one "
            f"comma-separated string, got {value!r}"
        )
    servers = [server for server in servers if server]
    if not servers:
        raise ValueError("MCPOOL_SERVERS names no server")
    for server in servers:
        try:
            parse_server(server)
        except ValueError as exc:
            raise ValueError(f"MCPOOL_SERVERS: {exc}") from None
    return servers


_UNSET = {"", "none"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(config: Mapping[str, Any], name: str) -> bool:
    value = config[name]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be a bool (or 'true'/'false'), got {value!r}")


def _parse_optional_bool(config: Mapping[str, Any], name: str) -> bool | None:
    value = config[name]
    if value is None or (isinstance(value, str) and value.strip().lower() in _UNSET):
        return None
    return _parse_bool(config, name)


def _parse_number(
    config: Mapping[str, Any], name: str, kind: Callable[[Any], Any]
) -> Any:
    value = config[name]
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _parse_mapping(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = config[name]
    if isinstance(value, str):
        # From the environment: a JSON object.
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError(f"{name} must be a JSON object, got {value!r}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping, got {value!r}")
    return dict(value)


# -- the flask mcpool commands ----------------------------------------------

cli = AppGroup("mcpool", help="Inspect the app's memcached pool and servers.")


def _check_servers(state: PoolState, timeout: float, fail: bool) -> None:
    """Log each server that does not answer within *timeout*; when none
    does, warn (:class:`StartupCheckWarning`) or, with *fail*, raise."""
    binary = bool(getattr(state.master, "binary", False))
    unanswered = []
    for server in state.servers:
        error = probe(server, timeout, binary=binary)
        if error is not None:
            logger.warning(
                "memcached server %s did not answer the start-up check: %s",
                server,
                error,
            )
            unanswered.append(f"{server} ({error})")
    if len(unanswered) < len(state.servers):
        return
    message = (
        f"no memcached server answered within {timeout:g} s: "
        f"{', '.join(unanswered)}; check MCPOOL_SERVERS and that memcached "
        "runs there"
    )
    if fail:
        raise ServerUnavailable(
            f"{message} (MCPOOL_CHECK_ON_START = 'fail'; 'warn' lets the "
            "app start, every read a miss, until a server comes up)"
        )
    warnings.warn(message, StartupCheckWarning, stacklevel=3)


@cli.command("stats")
@click.option("--all", "show_all", is_flag=True, help="Every server statistic.")
@click.option(
    "--url",
    metavar="URL",
    help="Read a running app's pool from its MCPOOL_STATS_URL endpoint "
    "(http://127.0.0.1:8000/_mcpool/stats) instead of this process's.",
)
def stats_command(show_all: bool, url: str | None) -> None:
    """Show the pool's counters and each memcached server's statistics.

    Without --url, the pool is the one this command's own process made: it
    has served nothing. A running server's workers each have their own pool;
    --url reads the one of the worker that answers.
    """
    if url is not None:
        _show_remote_stats(url)
        return
    state = _state_of(current_app)
    click.echo(
        f"(the pool of this CLI process, pid {os.getpid()}, not of a running "
        "server's: to read one, serve MCPOOL_STATS_URL and give its address "
        "with --url)"
    )
    _echo_pool_stats(type(state.pool).__name__, dataclasses.asdict(state.pool.stats()))
    failed = False
    for server, _, answer in ask_each_server(state.servers, state.make_client):
        click.echo(f"server {server}:")
        if isinstance(answer, Exception):
            failed = True
            click.echo(f"  error: {answer}")
            continue
        for line in server_stat_lines(answer, show_all):
            click.echo(line)
    if failed:
        raise SystemExit(1)


def _show_remote_stats(url: str) -> None:
    if not url.startswith(("http://", "https://")):
        click.echo(f"--url takes an http:// or https:// address, got {url!r}", err=True)
        raise SystemExit(2)
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            document = json.load(reply)
        pid, kind, stats = document["pid"], document["pool"], document["stats"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        click.echo(
            f"could not read pool statistics from {url}: {exc} (is the app "
            "serving MCPOOL_STATS_URL there?)",
            err=True,
        )
        raise SystemExit(1) from None
    click.echo(f"(the pool of process {pid}, which answered {url})")
    _echo_pool_stats(kind, stats)


def _echo_pool_stats(kind: str, stats: Mapping[str, Any]) -> None:
    click.echo(f"pool: {kind}")
    for name, value in stats.items():
        if isinstance(value, Mapping) and "counts" in value:  # timings on
            times = Histogram(
                tuple(value["bounds"]), tuple(value["counts"]), value["sum"]
            )
            value = (
                f"{times.count} times, p50 {_seconds(times.quantile(0.5))}, "
                f"p99 {_seconds(times.quantile(0.99))}"
            )
        if name != "servers" and value is not None:
            click.echo(f"  {name}: {value}")
    for server in stats.get("servers") or ():
        state = "available" if server["available"] else "UNAVAILABLE"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(server["since"]))
        click.echo(
            f"  server {server['address']}: {state} since {since}, "
            f"{server['unavailable']} requests failed, "
            f"{server['ejections']} times down"
            + (f", last error: {server['error']}" if server["error"] else "")
        )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.3f} ms"


@cli.command("ping")
def ping_command() -> None:
    """Check that each memcached server answers; exit 1 if one does not."""
    state = _state_of(current_app)
    failed = 0
    for server, elapsed, answer in ask_each_server(state.servers, state.make_client):
        if isinstance(answer, Exception):
            failed += 1
            click.echo(f"{server}  FAILED  {answer}")
        else:
            click.echo(f"{server}  ok  {elapsed * 1000:.2f} ms")
    if failed:
        click.echo(f"{failed} of {len(state.servers)} servers did not answer", err=True)
        raise SystemExit(1)
