"""The Flask extension against real memcached servers."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from importlib import metadata
from typing import Any

import pylibmc
import pytest
from flask import Flask, stream_with_context

import mcpool
import mcpool.flask
from mcpool import ClientPool, PoolMiddleware, RequestClient
from mcpool.flask import CONFIG_DEFAULTS, MemcachePool, PoolState
from mcpool.testing import MemcachedServer, free_port

memcache = MemcachePool()

FLASK_VERSION = tuple(
    int(part) for part in re.findall(r"\d+", metadata.version("flask"))[:3]
)

# Seconds per server operation, unless a test sets its own: generous, so that
# a busy machine never turns a slow reply into ServerUnavailable.
SERVER_TIMEOUT = 10.0


def create_app(servers: str | list[str], **config: Any) -> Flask:
    """The factory every test uses: one module-level extension, many apps."""
    app = Flask(__name__)
    config.setdefault("MCPOOL_SERVER_TIMEOUT", SERVER_TIMEOUT)
    app.config.update(TESTING=True, MCPOOL_SERVERS=servers, **config)
    memcache.init_app(app)

    @app.route("/")
    def index() -> str:
        return "no memcached here"

    @app.route("/get/<name>")
    def get(name: str) -> str:
        return str(memcache.client.get(name))

    @app.route("/set/<name>/<value>")
    def set_(name: str, value: str) -> str:
        memcache.client.set(name, value)
        return "stored"

    @app.route("/twice")
    def twice() -> str:
        first, second = memcache.client, memcache.client
        first.get("twice")
        assert first is second and first.client is second.client
        return str(id(first.client))

    return app


@pytest.fixture(autouse=True, params=["context variables", "public API"])
def context_lookup(request: pytest.FixtureRequest, monkeypatch: Any) -> str:
    """Run each test on Flask's private context variables (the extension's
    fast path) and on the public API that stands in where they are missing."""
    if request.param == "public API":
        monkeypatch.setattr(
            mcpool.flask, "_app_context_var", mcpool.flask._PublicAppContext()
        )
        monkeypatch.setattr(
            mcpool.flask, "_request_context_var", mcpool.flask._PublicRequestContext()
        )
    return str(request.param)


@pytest.fixture
def app(memcached: MemcachedServer) -> Iterator[Flask]:
    app = create_app(memcached.address)
    yield app
    MemcachePool.get_state(app).pool.close()


def pool_of(app: Flask) -> Any:
    return MemcachePool.get_state(app).pool


def key(name: str) -> str:
    return f"flask:{name}:{uuid.uuid4().hex}"


# -- the context's client ----------------------------------------------------


def test_view_that_never_uses_memcached_reserves_nothing(app: Flask) -> None:
    assert app.test_client().get("/").text == "no memcached here"
    stats = pool_of(app).stats()
    assert (stats.reserves, stats.created) == (0, 0)


def test_client_is_reserved_on_first_use_and_released_at_teardown(
    app: Flask, master: pylibmc.Client
) -> None:
    k = key("teardown")
    client = app.test_client()
    assert client.get(f"/set/{k}/hello").text == "stored"
    assert client.get(f"/get/{k}").text == "hello"
    stats = pool_of(app).stats()
    assert (stats.in_use, stats.idle, stats.reserves, stats.created) == (0, 1, 2, 1)
    assert master.get(k) == "hello"


def test_one_client_per_context_however_often_it_is_used(app: Flask) -> None:
    app.test_client().get("/twice")
    assert pool_of(app).stats().reserves == 1


def test_teardown_twice_releases_once(app: Flask, count_releases: Any) -> None:
    counting = count_releases(pool_of(app))
    MemcachePool.get_state(app).pool = counting
    with app.app_context():
        mc = memcache.client
        mc.get(key("twice"))
        assert mc.reserved and counting.checkouts == 1
        app.do_teardown_appcontext()
        assert mc.released and counting.releases == 1
        assert counting.pool.stats().in_use == 0
        # Late use in the torn-down context raises instead of leaking.
        with pytest.raises(RuntimeError, match="already released"):
            memcache.client.get(key("late"))
    # Popping the context ran the teardown again: still one release.
    assert counting.releases == 1 and counting.checkouts == 1
    with app.app_context():
        assert memcache.client.get(key("next")) is None
    assert (counting.checkouts, counting.releases) == (2, 2)
    assert counting.pool.stats().in_use == 0
    MemcachePool.get_state(app).pool = counting.pool


def test_teardown_functions_registered_before_init_app_can_use_the_client(
    memcached: MemcachedServer, master: pylibmc.Client
) -> None:
    k = key("late-teardown")
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        MCPOOL_SERVERS=memcached.address,
        MCPOOL_SERVER_TIMEOUT=SERVER_TIMEOUT,
    )

    @app.teardown_appcontext
    def record(exc: BaseException | None) -> None:
        memcache.client.set(k, "recorded at teardown")

    memcache.init_app(app)
    try:
        with app.app_context():
            memcache.client.get(k)
        assert master.get(k) == "recorded at teardown"
        stats = pool_of(app).stats()
        assert (stats.in_use, stats.reserves) == (0, 1)
    finally:
        pool_of(app).close()


def test_a_bare_context_pushed_again_after_teardown_refuses_the_client(
    app: Flask,
) -> None:
    context = app.app_context()
    with context:
        memcache.client.get(key("first-push"))
    with context, pytest.raises(RuntimeError, match="already released"):
        memcache.client.get(key("second-push"))
    assert pool_of(app).stats().in_use == 0


def test_nested_app_contexts_each_get_their_own_client(app: Flask) -> None:
    with app.app_context():
        outer = memcache.client
        outer.get(key("outer"))
        with app.app_context():
            inner = memcache.client
            inner.get(key("inner"))
            assert inner is not outer and inner.client is not outer.client
        assert inner.released and outer.reserved
        assert pool_of(app).stats().in_use == 1
    assert pool_of(app).stats().in_use == 0


def test_reserve_gives_a_separate_client_for_a_with_block(app: Flask) -> None:
    with app.app_context():
        context_client = memcache.client.client
        with memcache.reserve() as mc:
            assert mc is not context_client
            assert pool_of(app).stats().in_use == 2
            mc.set(key("reserve"), "v")
        assert pool_of(app).stats().in_use == 1
    assert pool_of(app).stats().in_use == 0


def test_a_fatal_error_in_a_view_discards_the_client(app: Flask) -> None:
    @app.route("/fatal")
    def fatal() -> str:
        memcache.client.get(key("fatal"))
        raise pylibmc.ServerDown("lost the server")

    with pytest.raises(pylibmc.ServerDown):  # TESTING propagates exceptions
        app.test_client().get("/fatal")
    stats = pool_of(app).stats()
    assert (stats.in_use, stats.discarded) == (0, 1)
    k = key("after-fatal")
    assert app.test_client().get(f"/set/{k}/ok").text == "stored"
    assert app.test_client().get(f"/get/{k}").text == "ok"


def test_an_app_error_in_a_view_keeps_the_client(app: Flask) -> None:
    app.config["TESTING"] = False

    @app.route("/broken")
    def broken() -> str:
        memcache.client.get(key("broken"))
        raise ZeroDivisionError

    assert app.test_client().get("/broken").status_code == 500
    stats = pool_of(app).stats()
    assert (stats.in_use, stats.idle, stats.discarded) == (0, 1, 0)


# -- errors outside a context or without init_app ---------------------------


def test_client_outside_an_app_context_says_what_to_do(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="needs an application context"):
        memcache.client  # noqa: B018
    with pytest.raises(RuntimeError, match="needs an application context"):
        memcache.reserve()
    with pytest.raises(RuntimeError, match="needs an application context"):
        memcache.pool  # noqa: B018
    assert pool_of(app).stats().reserves == 0


def test_app_without_init_app_says_what_to_do() -> None:
    bare = Flask("bare")
    with bare.app_context():
        with pytest.raises(RuntimeError, match=r"not set up for the app 'bare'"):
            memcache.client  # noqa: B018
    with pytest.raises(RuntimeError, match="init_app"):
        MemcachePool.get_state(bare)


def test_init_app_twice_for_one_app_is_refused(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="already set up"):
        MemcachePool(app)


# -- several apps in one process --------------------------------------------


def test_two_apps_from_one_factory_keep_their_own_pools_and_servers(
    memcached: MemcachedServer, fresh_memcached: MemcachedServer
) -> None:
    first = create_app(memcached.address)
    second = create_app([fresh_memcached.address], MCPOOL_POOL_SIZE=3)
    try:
        assert vars(memcache) == {}, "the extension keeps no app"
        state1, state2 = MemcachePool.get_state(first), MemcachePool.get_state(second)
        assert state1.pool is not state2.pool
        assert state1.master is not state2.master
        assert (state1.pool.max_size, state2.pool.max_size) == (10, 3)

        k = key("two-apps")
        assert first.test_client().get(f"/set/{k}/one").text == "stored"
        assert second.test_client().get(f"/set/{k}/two").text == "stored"
        assert first.test_client().get(f"/get/{k}").text == "one"
        assert second.test_client().get(f"/get/{k}").text == "two"
        assert pylibmc.Client([memcached.address]).get(k) == "one"
        assert pylibmc.Client([fresh_memcached.address]).get(k) == "two"

        # Interleaved contexts resolve to their own app's pool.
        with first.app_context():
            a = memcache.client
            with second.app_context():
                b = memcache.client
                assert b.pool is state2.pool
            assert a.pool is state1.pool
        for state in (state1, state2):
            assert state.pool.stats().in_use == 0
    finally:
        pool_of(first).close()
        pool_of(second).close()


# -- streaming ---------------------------------------------------------------


def test_stream_with_context_keeps_a_client_until_the_stream_ends(
    app: Flask, master: pylibmc.Client
) -> None:
    k = key("stream")
    master.set(k, "part")
    during: list[int] = []

    @app.route("/stream")
    def stream() -> Any:
        memcache.client.get(k)

        @stream_with_context
        def body() -> Iterator[str]:
            for _ in range(3):
                yield memcache.client.get(k)
                during.append(pool_of(app).stats().in_use)

        return app.response_class(body())

    response = app.test_client().get("/stream")  # reads the first chunk
    try:
        # The stream holds a client while it runs...
        assert pool_of(app).stats().in_use == 1
        assert response.get_data() == b"partpartpart"
        assert during == [1, 1, 1]
        # ... until the teardown at the end of the stream returns it.
        stats = pool_of(app).stats()
        assert (stats.in_use, stats.created) == (0, 1)
        # Flask 3.1.2 tears the view's context down when the view returns
        # and pushes it again for the stream, whose first use reserves a
        # client of its own; earlier releases keep the view's context, and
        # its client, until the stream ends.
        assert stats.reserves == (2 if FLASK_VERSION >= (3, 1, 2) else 1)
    finally:
        # An unfinished stream would leave its context pushed in this thread.
        response.close()
    assert pool_of(app).stats().in_use == 0


def test_a_stream_without_its_context_gets_a_clear_error(app: Flask) -> None:
    @app.route("/lost")
    def lost() -> Any:
        mc = memcache.client
        mc.get(key("lost"))

        def body() -> Iterator[str]:
            yield "start"
            yield str(mc.get(key("lost")))  # the context is gone by now

        return app.response_class(body())

    response = app.test_client().get("/lost")
    with pytest.raises(RuntimeError, match="stream_with_context"):
        response.get_data()
    response.close()
    assert pool_of(app).stats().in_use == 0


def test_with_the_middleware_the_extension_uses_its_client_until_close(
    memcached: MemcachedServer, master: pylibmc.Client
) -> None:
    app = create_app(memcached.address, MCPOOL_WSGI_MIDDLEWARE=True)
    assert isinstance(app.wsgi_app, PoolMiddleware)
    k = key("middleware")
    master.set(k, "chunk")
    seen: list[Any] = []

    @app.route("/stream")
    def stream() -> Any:
        from flask import request

        mc = memcache.client
        seen.append(request.environ["mcpool.client"] is mc)

        def body() -> Iterator[str]:  # no stream_with_context needed
            for _ in range(2):
                yield mc.get(k)

        return app.response_class(body())

    try:
        response = app.test_client().get("/stream")
        assert response.get_data() == b"chunkchunk"
        assert seen == [True]
        assert pool_of(app).stats().in_use == 1, "held until the server closes"
        response.close()
        assert pool_of(app).stats().in_use == 0
        assert pool_of(app).stats().reserves == 1
    finally:
        pool_of(app).close()


def test_a_middleware_of_another_pool_is_not_reused(
    app: Flask, master: pylibmc.Client
) -> None:
    other = ClientPool(master, 1)
    app.wsgi_app = PoolMiddleware(app.wsgi_app, other)  # type: ignore[method-assign]
    k = key("other")
    assert app.test_client().get(f"/set/{k}/v").text == "stored"
    assert other.stats().reserves == 0
    assert pool_of(app).stats().reserves == 1
    other.close()


# -- config --------------------------------------------------------------------


def test_config_defaults_are_set_without_overriding(memcached: MemcachedServer) -> None:
    app = Flask("config")
    app.config["MCPOOL_SERVERS"] = f" {memcached.address} , "
    app.config["MCPOOL_POOL_SIZE"] = "4"  # as read from the environment
    app.config["MCPOOL_BINARY"] = "false"
    app.config["MCPOOL_POOL_OPTIONS"] = '{"max_idle": 30}'
    app.config["MCPOOL_SERVER_TIMEOUT"] = SERVER_TIMEOUT
    MemcachePool(app)
    try:
        for name, default in CONFIG_DEFAULTS.items():
            assert name in app.config
            if name not in {
                "MCPOOL_SERVERS",
                "MCPOOL_POOL_SIZE",
                "MCPOOL_BINARY",
                "MCPOOL_POOL_OPTIONS",
                "MCPOOL_SERVER_TIMEOUT",
            }:
                assert app.config[name] == default
        assert app.config["MCPOOL_POOL_SIZE"] == "4"
        assert app.config["MCPOOL_SERVER_TIMEOUT"] == SERVER_TIMEOUT
        state = MemcachePool.get_state(app)
        assert isinstance(state, PoolState)
        assert state.servers == [memcached.address]
        assert state.pool.max_size == 4 and state.pool.max_idle == 30
        assert state.master.binary is False
        with app.app_context():
            memcache.client.set(key("config"), 1)
    finally:
        pool_of(app).close()


def test_defaults_are_not_shared_between_apps(memcached: MemcachedServer) -> None:
    first = create_app(memcached.address)
    second = create_app(memcached.address)
    first.config["MCPOOL_BEHAVIORS"]["tcp_nodelay"] = True
    assert second.config["MCPOOL_BEHAVIORS"] == {}
    assert CONFIG_DEFAULTS["MCPOOL_BEHAVIORS"] == {}
    pool_of(first).close()
    pool_of(second).close()


def test_behaviors_reach_the_master(memcached: MemcachedServer) -> None:
    app = create_app(memcached.address, MCPOOL_BEHAVIORS={"connect_timeout": 250})
    assert MemcachePool.get_state(app).master.behaviors["connect_timeout"] == 250
    pool_of(app).close()


def test_an_overloaded_pool_answers_503_through_an_error_handler(
    memcached: MemcachedServer,
) -> None:
    app = create_app(memcached.address, MCPOOL_POOL_SIZE=1, MCPOOL_MAX_WAITING="0")

    @app.errorhandler(mcpool.TooManyRequests)
    def overloaded(exc: mcpool.TooManyRequests) -> tuple[str, int, dict[str, str]]:
        return "busy, try again", 503, {"Retry-After": "1"}

    pool = pool_of(app)
    assert pool.max_waiting == 0
    lease = pool.checkout()  # the only client, held elsewhere
    try:
        response = app.test_client().get("/get/overload")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
    finally:
        lease.release()
    assert app.test_client().get("/get/overload").status_code == 200
    stats = pool.stats()
    assert stats.rejected == 1 and stats.in_use == 0
    pool.close()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MCPOOL_SERVERS", "", "names no server"),
        ("MCPOOL_SERVERS", 11211, "MCPOOL_SERVERS must be"),
        ("MCPOOL_POOL", "fifo", "MCPOOL_POOL must be one of 'queue', 'thread'"),
        ("MCPOOL_POOL_SIZE", "many", "MCPOOL_POOL_SIZE must be a number"),
        ("MCPOOL_POOL_SIZE", 0, "MCPOOL_POOL_SIZE must be at least 1"),
        ("MCPOOL_POOL_TIMEOUT", True, "MCPOOL_POOL_TIMEOUT must be a number"),
        ("MCPOOL_BINARY", "maybe", "MCPOOL_BINARY must be a bool"),
        ("MCPOOL_BEHAVIORS", "{not json", "MCPOOL_BEHAVIORS must be a JSON object"),
        ("MCPOOL_POOL_OPTIONS", [1], "MCPOOL_POOL_OPTIONS must be a mapping"),
        ("MCPOOL_MAX_WAITING", "lots", "MCPOOL_MAX_WAITING must be a number"),
        ("MCPOOL_MAX_WAITING", -1, "MCPOOL_MAX_WAITING must be 0 or more"),
        ("MCPOOL_USERNAME", "user", "set both MCPOOL_USERNAME and MCPOOL_PASSWORD"),
    ],
)
def test_bad_config_names_the_key(name: str, value: Any, message: str) -> None:
    app = Flask("bad")
    app.config[name] = value
    with pytest.raises(ValueError, match=message):
        MemcachePool(app)
    assert "mcpool" not in app.extensions


def test_sasl_needs_the_binary_protocol() -> None:
    app = Flask("sasl")
    app.config.update(
        MCPOOL_USERNAME="user", MCPOOL_PASSWORD="secret", MCPOOL_BINARY=False
    )
    with pytest.raises(ValueError, match="binary protocol"):
        MemcachePool(app)


# -- the flask mcpool commands ----------------------------------------------


def test_cli_ping_reports_each_server(
    memcached: MemcachedServer, fresh_memcached: MemcachedServer
) -> None:
    app = create_app([memcached.address, fresh_memcached.address])
    result = app.test_cli_runner().invoke(args=["mcpool", "ping"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[:2] for line in lines] == [
        [memcached.address, "ok"],
        [fresh_memcached.address, "ok"],
    ]
    pool_of(app).close()


def test_cli_ping_fails_for_a_dead_server(memcached: MemcachedServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    app = create_app([memcached.address, dead])
    result = app.test_cli_runner().invoke(args=["mcpool", "ping"])
    assert result.exit_code == 1
    assert f"{memcached.address}  ok" in result.output
    assert f"{dead}  FAILED" in result.output
    assert "1 of 2 servers did not answer" in result.output
    pool_of(app).close()


def test_cli_stats_shows_pool_and_server_stats(app: Flask) -> None:
    app.test_client().get(f"/get/{key('cli')}")
    result = app.test_cli_runner().invoke(args=["mcpool", "stats"])
    assert result.exit_code == 0, result.output
    assert "pool: ClientPool" in result.output
    assert "  reserves: 1" in result.output and "  in_use: 0" in result.output
    assert "curr_connections: " in result.output
    assert "rusage_user" not in result.output
    every = app.test_cli_runner().invoke(args=["mcpool", "stats", "--all"])
    assert "rusage_user: " in every.output


def test_cli_stats_shows_wait_and_use_percentiles_with_timings(
    memcached: MemcachedServer,
) -> None:
    app = create_app(memcached.address, MCPOOL_POOL_OPTIONS={"timings": True})
    app.test_client().get(f"/get/{key('cli')}")
    result = app.test_cli_runner().invoke(args=["mcpool", "stats"])
    assert result.exit_code == 0, result.output
    assert "  wait_time: 1 times, p50 " in result.output
    assert "  use_time: 1 times, p50 " in result.output
    assert " ms, p99 " in result.output
    pool_of(app).close()


def test_cli_stats_fails_for_a_dead_server(memcached: MemcachedServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    app = create_app([dead])
    result = app.test_cli_runner().invoke(args=["mcpool", "stats"])
    assert result.exit_code == 1
    assert f"server {dead}:\n  error: " in result.output
    pool_of(app).close()


def test_request_client_is_what_the_extension_hands_out(app: Flask) -> None:
    with app.test_request_context():
        assert isinstance(memcache.client, RequestClient)
        assert memcache.pool is pool_of(app)


# -- the safe client -------------------------------------------------------------


def test_the_master_is_the_safe_client_with_its_timeout(
    memcached: MemcachedServer,
) -> None:
    app = create_app(memcached.address, MCPOOL_SERVER_TIMEOUT="0.5")
    state = MemcachePool.get_state(app)
    try:
        assert isinstance(state.master, mcpool.Client)
        assert state.master.binary is False, "text unless SASL, as mcpool.Client"
        behaviors = state.master.behaviors
        assert behaviors["connect_timeout"] == 500 and behaviors["ketama"]
        with app.app_context():
            assert isinstance(memcache.client.client, mcpool.Client)
    finally:
        state.pool.close()


def test_an_invalid_key_raises_and_the_client_stays_in_the_pool(
    app: Flask, master: pylibmc.Client
) -> None:
    @app.route("/inject")
    def inject() -> str:
        memcache.client.get("foo\r\nset injected 0 0 8\r\nINJECTED")
        return "unreachable"

    with pytest.raises(mcpool.InvalidKey):
        app.test_client().get("/inject")
    stats = pool_of(app).stats()
    assert (stats.in_use, stats.idle, stats.discarded) == (0, 1, 0)
    assert master.get("injected") is None
    k = key("after-invalid")
    assert app.test_client().get(f"/set/{k}/fine").text == "stored"
    assert app.test_client().get(f"/get/{k}").text == "fine"


def test_safe_client_can_be_turned_off(memcached: MemcachedServer) -> None:
    app = create_app(memcached.address, MCPOOL_SAFE_CLIENT="false", MCPOOL_BINARY=True)
    state = MemcachePool.get_state(app)
    try:
        assert type(state.master) is pylibmc.Client and state.master.binary
        k = key("plain")
        assert app.test_client().get(f"/set/{k}/v").text == "stored"
    finally:
        state.pool.close()


def test_client_options_that_do_not_fit_name_the_key() -> None:
    app = Flask("options")
    app.config["MCPOOL_CLIENT_OPTIONS"] = {"no_such_option": 1}
    with pytest.raises(ValueError, match="MCPOOL_CLIENT_OPTIONS"):
        MemcachePool(app)
    app = Flask("options")
    app.config["MCPOOL_POOL_OPTIONS"] = {"no_such_option": 1}
    with pytest.raises(ValueError, match="MCPOOL_POOL_OPTIONS"):
        MemcachePool(app)


# -- MCPOOL_POOL = "thread" --------------------------------------------------------


def test_thread_pool_kind_binds_the_threads_client(
    memcached: MemcachedServer,
) -> None:
    app = create_app(memcached.address, MCPOOL_POOL="thread", MCPOOL_POOL_SIZE=4)
    pool = pool_of(app)
    try:
        assert isinstance(pool, mcpool.ThreadMappedPool) and pool.max_size == 4
        seen: list[Any] = []

        @app.route("/nested")
        def nested() -> str:
            mc = memcache.client
            mc.get(key("nested"))
            with memcache.reserve() as again:  # the same thread: the same client
                seen.append(again is mc.client)
            seen.append(mc.client)
            return "ok"

        client = app.test_client()
        assert client.get("/nested").text == "ok"
        assert client.get("/nested").text == "ok"
        # Nested reserve gave the thread's client; the next request in this
        # thread found the same client still bound to it.
        assert seen[0] is True and seen[2] is True and seen[1] is seen[3]
        assert pool.stats().created == 1

        # Another thread gets a client of its own.
        other: list[Any] = []

        def in_another_thread() -> None:
            with app.app_context():
                other.append(memcache.client.client)
                memcache.client.get(key("other"))

        worker = threading.Thread(target=in_another_thread)
        worker.start()
        worker.join(60)
        assert other and other[0] is not seen[1]
    finally:
        pool.close()


# -- importing the extension -------------------------------------------------


def test_the_fast_path_is_taken_where_flask_has_its_context_variables(
    context_lookup: str,
) -> None:
    import flask.globals

    app_var, request_var = mcpool.flask._context_variables()
    if isinstance(getattr(flask.globals, "_cv_app", None), ContextVar):
        assert app_var is flask.globals._cv_app
        assert request_var is flask.globals._cv_request
        if context_lookup == "context variables":  # not patched by the fixture
            assert mcpool.flask._app_context_var is app_var
    else:
        assert isinstance(app_var, mcpool.flask._PublicAppContext)


@pytest.mark.parametrize("missing", ["_cv_app", "_cv_request"])
def test_without_flasks_context_variables_the_public_api_serves_requests(
    memcached: MemcachedServer, missing: str
) -> None:
    # A Flask release without the private names: import the extension there
    # and serve real requests through it.
    code = f"""
import flask, flask.globals, sys
del flask.globals.{missing}
import mcpool.flask
from mcpool.flask import MemcachePool
assert isinstance(mcpool.flask._app_context_var, mcpool.flask._PublicAppContext)
app = flask.Flask("public")
app.config["MCPOOL_SERVERS"] = sys.argv[1]
memcache = MemcachePool(app)

@app.route("/<name>")
def view(name):
    mc = memcache.client
    assert mc is memcache.client
    mc.set(name, "value")
    return mc.get(name)

client = app.test_client()
assert client.get("/public-api").text == "value"
assert client.get("/public-api").text == "value"
stats = MemcachePool.get_state(app).pool.stats()
assert (stats.in_use, stats.reserves, stats.created) == (0, 2, 1), stats
print("served")
"""
    result = subprocess.run(
        [sys.executable, "-c", code, memcached.address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "served"


def test_importing_without_flask_names_flask_and_the_extra(monkeypatch: Any) -> None:
    # As in an environment without Flask (nor click, its dependency).
    monkeypatch.delitem(sys.modules, "mcpool.flask")
    monkeypatch.setitem(sys.modules, "flask", None)
    monkeypatch.setitem(sys.modules, "click", None)
    with pytest.raises(ImportError) as excinfo:
        import mcpool.flask  # noqa: F401
    message = str(excinfo.value)
    assert "mcpool.flask needs Flask" in message
    assert "pip install 'mcpool[flask]'" in message
    assert "click" not in message
