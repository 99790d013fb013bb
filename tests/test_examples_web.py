"""The Werkzeug and Flask examples, run against a real memcached."""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pylibmc
import pytest
from flask import Flask
from werkzeug.serving import make_server
from werkzeug.test import Client

from examples import werkzeug_app
from examples.flask_app import GREETING_KEY, create_app
from mcpool import validate_key
from mcpool.flask import MemcachePool
from mcpool.testing import MemcachedServer

# Seconds per server operation: generous, so that a busy machine never turns
# a slow reply into ServerUnavailable in tests that are not about timeouts.
SERVER_TIMEOUT = 10.0


@pytest.fixture
def flask_app(memcached: MemcachedServer) -> Iterator[Flask]:
    app = create_app(
        {
            "MCPOOL_SERVERS": memcached.address,
            "MCPOOL_SERVER_TIMEOUT": SERVER_TIMEOUT,
            "TESTING": True,
        }
    )
    yield app
    MemcachePool.get_state(app).pool.close()


def test_werkzeug_app_counts_views_per_path(memcached: MemcachedServer) -> None:
    app = werkzeug_app.create_app(
        [memcached.address], threads=2, timeout=SERVER_TIMEOUT
    )
    client = Client(app)
    page = f"/page/{uuid.uuid4().hex}"
    first = client.get(page, buffered=True)
    second = client.get(page, buffered=True)
    assert first.text == f"{page} has 1 views\n"
    assert second.text == f"{page} has 2 views\n"
    assert client.get("/favicon.ico", buffered=True).status_code == 404
    stats = app.pool.stats()
    assert (stats.reserves, stats.in_use) == (2, 0), "favicon held no client"


@pytest.mark.parametrize(
    "path",
    [
        "/with space",
        "/crlf%0D%0Aset%20injected%200%200%208%0D%0AINJECTED",
        "/" + "x" * 400,
        "/caf\u00e9/\u65e5\u672c",
        "/tab%09and%00nul",
    ],
)
def test_werkzeug_app_takes_any_path_safely(
    memcached: MemcachedServer, path: str
) -> None:
    app = werkzeug_app.create_app(
        [memcached.address], threads=1, timeout=SERVER_TIMEOUT
    )
    client = Client(app)
    assert client.get(path, buffered=True).text.endswith(" has 1 views\n")
    assert client.get(path, buffered=True).text.endswith(" has 2 views\n")
    plain = pylibmc.Client([memcached.address])
    assert plain.get("injected") is None
    validate_key(werkzeug_app.page_key(path))
    assert app.pool.stats().discarded == 0


def test_flask_app_index_does_one_get(flask_app: Flask, master: Any) -> None:
    client = flask_app.test_client()
    assert client.get("/").text == "hello from memcached"
    master.set(GREETING_KEY, "changed")
    assert client.get("/").text == "changed"
    master.delete(GREETING_KEY)
    stats = MemcachePool.get_state(flask_app).pool.stats()
    assert (stats.reserves, stats.in_use, stats.created) == (2, 0, 1)


def test_flask_app_count_stream_and_health(flask_app: Flask) -> None:
    client = flask_app.test_client()
    page = f"a/{uuid.uuid4().hex}/b c"
    assert client.get(f"/count/{page}").text == f"{page}: 1\n"
    assert client.get(f"/count/{page}").text == f"{page}: 2\n"
    lines = client.get("/stream").text.splitlines()
    assert len(lines) == 3 and lines[0].startswith("0: ")
    pool = MemcachePool.get_state(flask_app).pool
    before = pool.stats().reserves
    assert client.get("/health").text == "ok"
    assert pool.stats().reserves == before
    assert pool.stats().in_use == 0


def test_flask_app_reads_its_config_from_the_environment(
    memcached: MemcachedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPOOL_SERVERS", f"{memcached.address},")
    monkeypatch.setenv("MCPOOL_POOL_SIZE", "3")
    monkeypatch.setenv("MCPOOL_POOL_OPTIONS", '{"max_idle": 60}')
    monkeypatch.setenv("UNRELATED", "ignored")
    app = create_app(
        {"MCPOOL_POOL_TIMEOUT": 0.5, "MCPOOL_SERVER_TIMEOUT": SERVER_TIMEOUT}
    )
    state = MemcachePool.get_state(app)
    try:
        assert state.servers == [memcached.address]
        assert (state.pool.max_size, state.pool.max_idle) == (3, 60)
        assert state.pool.timeout == 0.5
        assert app.config["MCPOOL_POOL_SIZE"] == 3
        assert app.test_client().get("/").status_code == 200
    finally:
        state.pool.close()


def test_flask_app_factory_makes_independent_apps(memcached: MemcachedServer) -> None:
    config = {
        "MCPOOL_SERVERS": memcached.address,
        "MCPOOL_SERVER_TIMEOUT": SERVER_TIMEOUT,
    }
    first = create_app(config)
    second = create_app(config)
    try:
        assert first.test_client().get("/").status_code == 200
        assert second.test_client().get("/").status_code == 200
        pools = [MemcachePool.get_state(a).pool for a in (first, second)]
        assert pools[0] is not pools[1]
        assert [p.stats().reserves for p in pools] == [1, 1]
    finally:
        for app in (first, second):
            MemcachePool.get_state(app).pool.close()


def test_flask_app_under_a_threaded_server(memcached: MemcachedServer) -> None:
    app = create_app(
        {
            "MCPOOL_SERVERS": memcached.address,
            "MCPOOL_POOL_SIZE": 3,
            # Eight client threads share three clients: a request may wait
            # for one longer than the default 2 s on a busy machine.
            "MCPOOL_POOL_TIMEOUT": 60,
            "MCPOOL_SERVER_TIMEOUT": SERVER_TIMEOUT,
        }
    )
    pool = MemcachePool.get_state(app).pool
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    failures: list[object] = []

    def client() -> None:
        for _ in range(10):
            conn = http.client.HTTPConnection(
                "127.0.0.1", server.server_port, timeout=10
            )
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read()
                if (response.status, body) != (200, b"hello from memcached"):
                    failures.append((response.status, body))
            except OSError as exc:  # pragma: no cover - reported below
                failures.append(exc)
            finally:
                conn.close()

    try:
        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        server.shutdown()
        server.server_close()
        serving.join(10)
    stats = pool.stats()
    pool.close()
    assert failures == []
    assert stats.reserves == 80 and stats.in_use == 0
    assert stats.created <= 3 and stats.discarded == 0
