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
server's statistics) and ``ping`` (does each server answer, and how fast).
"""

from __future__ import annotations

import dataclasses
import json
import time
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
from flask import current_app, g, has_app_context, has_request_context, request
from flask.cli import AppGroup

from .client import DEFAULT_TIMEOUT, Client
from .clientpool import ClientPool
from .histogram import Histogram
from .middleware import PoolMiddleware, RequestClient
from .pool import Reservation
from .telemetry import export_metrics
from .threadmapped import ThreadMappedPool

__all__ = ["CONFIG_DEFAULTS", "MemcachePool", "PoolState", "cli"]

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
    "MCPOOL_POOL_OPTIONS": {},
    "MCPOOL_WSGI_MIDDLEWARE": False,
    "MCPOOL_ENVIRON_KEY": "mcpool.client",
    "MCPOOL_METRICS": None,
}

POOL_KINDS = ("queue", "thread")

_EXTENSION_KEY = "mcpool"
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
        pool: Any,
        master: Any,
        servers: list[str],
        environ_key: str,
        make_client: Callable[[list[str]], Any],
    ) -> None:
        self.pool = pool
        self.master = master
        self.servers = servers
        self.environ_key = environ_key
        self.make_client = make_client

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
        :raises RuntimeError: ``init_app`` was already called for *app*.

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
        for name, value in CONFIG_DEFAULTS.items():
            # Copies, so that no app can change another's defaults in place.
            app.config.setdefault(name, _copy(value))
        state = _state_from_config(app.config)
        export_metrics(state.pool, app.config["MCPOOL_METRICS"], "MCPOOL_METRICS")
        app.extensions[_EXTENSION_KEY] = state
        # Teardown functions run in the reverse order of registration: first
        # in the list runs last, after every other teardown function that may
        # still use the context's client.
        app.teardown_appcontext_funcs.insert(0, _release_context_client)
        app.cli.add_command(cli)
        if _parse_bool(app.config, "MCPOOL_WSGI_MIDDLEWARE"):
            app.wsgi_app = PoolMiddleware(  # type: ignore[method-assign]
                app.wsgi_app, state.pool, state.environ_key
            )

    @property
    def client(self) -> RequestClient:
        """The current context's client, reserved on first use.

        The same object for the whole app context; released when the context
        is torn down (or, if :class:`~mcpool.PoolMiddleware` is installed for
        this app's pool, when the server closes the response).

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
                return shared
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
        return context_client

    @property
    def pool(self) -> Any:
        """The current app's pool.

        :raises RuntimeError: outside an app context, or for an app that
            :meth:`init_app` has not set up.

        >>> memcache.pool.stats().max_size  # doctest: +SKIP
        10
        """
        return _current_state("MemcachePool.pool").pool

    def reserve(
        self, block: bool = True, timeout: float | None = None
    ) -> Reservation[Any]:
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
        reservation: Reservation[Any] = pool.reserve(block, timeout)
        return reservation

    @staticmethod
    def get_state(app: Flask) -> PoolState:
        """*app*'s :class:`PoolState`, without needing an app context.

        :raises RuntimeError: :meth:`init_app` was not called for *app*.

        >>> MemcachePool.get_state(app).pool.stats().in_use  # doctest: +SKIP
        0
        """
        return _state_of(app)


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
    environ_key = config["MCPOOL_ENVIRON_KEY"]

    def make_client(addresses: list[str]) -> Any:
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
    kind: str, master: Any, size: int, timeout: float, options: dict[str, Any]
) -> Any:
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

_SERVER_STATS = (
    "version",
    "uptime",
    "curr_connections",
    "total_connections",
    "curr_items",
    "bytes",
    "limit_maxbytes",
    "get_hits",
    "get_misses",
    "evictions",
)


def _ask_each_server(state: PoolState) -> list[tuple[str, float, Any]]:
    """``(server, seconds, stats dict or the error)`` for each server.

    One client per server, so that a dead server does not hide the others.
    """
    answers: list[tuple[str, float, Any]] = []
    for server in state.servers:
        client = state.make_client([server])
        started = time.perf_counter()
        try:
            replies = client.get_stats()
            answer: Any = dict(replies[0][1]) if replies else {}
        except pylibmc.Error as exc:
            answer = exc
        finally:
            elapsed = time.perf_counter() - started
            client.disconnect_all()
        answers.append((server, elapsed, answer))
    return answers


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@cli.command("stats")
@click.option("--all", "show_all", is_flag=True, help="Every server statistic.")
def stats_command(show_all: bool) -> None:
    """Show the pool's counters and each memcached server's statistics."""
    state = _state_of(current_app)
    click.echo(f"pool: {type(state.pool).__name__}")
    pool_stats = state.pool.stats()
    for field in dataclasses.fields(pool_stats):
        value = getattr(pool_stats, field.name)
        if isinstance(value, Histogram):  # with timings on
            value = (
                f"{value.count} times, p50 {_seconds(value.quantile(0.5))}, "
                f"p99 {_seconds(value.quantile(0.99))}"
            )
        if value is not None:
            click.echo(f"  {field.name}: {value}")
    failed = False
    for server, _, answer in _ask_each_server(state):
        click.echo(f"server {server}:")
        if isinstance(answer, BaseException):
            failed = True
            click.echo(f"  error: {answer}")
            continue
        stats = {_text(k): _text(v) for k, v in answer.items()}
        names = sorted(stats) if show_all else [n for n in _SERVER_STATS if n in stats]
        for name in names:
            click.echo(f"  {name}: {stats[name]}")
    if failed:
        raise SystemExit(1)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.3f} ms"


@cli.command("ping")
def ping_command() -> None:
    """Check that each memcached server answers; exit 1 if one does not."""
    state = _state_of(current_app)
    failed = 0
    for server, elapsed, answer in _ask_each_server(state):
        if isinstance(answer, BaseException):
            failed += 1
            click.echo(f"{server}  FAILED  {answer}")
        else:
            click.echo(f"{server}  ok  {elapsed * 1000:.2f} ms")
    if failed:
        click.echo(f"{failed} of {len(state.servers)} servers did not answer", err=True)
        raise SystemExit(1)
