"""The live statistics endpoint: :class:`mcpool.StatsApp`, the Flask
extension's ``MCPOOL_STATS_URL`` and ``flask mcpool stats --url``, in one
process and under gunicorn with two worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from test_deployment import REPO, START_TIMEOUT, stop, tail, tool
from werkzeug.test import Client as WSGIClient

import mcpool
from mcpool import Client, ClientPool, PoolMiddleware, StatsApp
from mcpool.flask import MemcachePool
from mcpool.testing import MemcachedServer, free_port

SERVER_TIMEOUT = 10.0
STATS_PATH = "/_mcpool/stats"


@pytest.fixture
def pool(memcached: MemcachedServer) -> Iterator[ClientPool]:
    pool = ClientPool(Client([memcached.address], timeout=SERVER_TIMEOUT), 2)
    yield pool
    pool.close()


def test_stats_app_serves_the_pools_stats_with_the_pid(pool: ClientPool) -> None:
    with pool.reserve() as mc:
        mc.get("statsapp")
    reply = WSGIClient(StatsApp(pool)).get("/")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json"
    document = reply.get_json()
    assert document["pid"] == os.getpid() and document["pool"] == "ClientPool"
    assert document["stats"]["reserves"] == 1 and document["stats"]["in_use"] == 0
    [server] = document["stats"]["servers"]
    assert server["address"] == pool.master.health.servers[0].address
    assert server["available"] is True and server["unavailable"] == 0
    assert WSGIClient(StatsApp(pool)).post("/").status_code == 405


def test_stats_app_reports_health_for_each_scrapes_window(pool: ClientPool) -> None:
    app = WSGIClient(StatsApp(pool))
    assert app.get("/").get_json()["health"] == {
        "healthy": True,
        "problems": [],
        "wait_p99": None,
        "timeouts": 0,
    }
    with pool.reserve(), pool.reserve():  # both clients: the next one times out
        with pytest.raises(mcpool.PoolTimeout):
            with pool.reserve(timeout=0):
                pass
    health = app.get("/").get_json()["health"]
    assert health["healthy"] is False and health["timeouts"] == 1
    assert health["problems"] == [
        f"{pool.name}: 1 reservations timed out (more than 0 allowed)"
    ]
    # The next scrape judges only the time since this one.
    assert app.get("/").get_json()["health"]["healthy"] is True


def test_stats_app_health_says_when_every_server_is_down(
    fresh_memcached: MemcachedServer,
) -> None:
    pool = ClientPool(Client([fresh_memcached.address], timeout=SERVER_TIMEOUT), 2)
    app = WSGIClient(StatsApp(pool))
    fresh_memcached.kill()
    deadline = time.monotonic() + 60
    while app.get("/").get_json()["health"]["healthy"]:
        assert time.monotonic() < deadline, "the dead server was never noticed"
        with pool.reserve() as mc:
            mc.get("statsapp:down")  # a miss, and a probe of the servers
        time.sleep(0.01)
    [problem] = app.get("/").get_json()["health"]["problems"]
    assert problem == f"{pool.name}: every server is down ({fresh_memcached.address})"
    pool.close()


def test_stats_app_mounted_beside_the_middleware_as_the_docs_show(
    pool: ClientPool,
) -> None:
    def my_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["mcpool.client"].get("statsapp")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    stats = StatsApp(pool)
    app = PoolMiddleware(my_app, pool)

    def application(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/_mcpool/stats":
            return stats(environ, start_response)
        return app(environ, start_response)

    client = WSGIClient(application)
    assert client.get("/", buffered=True).text == "ok"
    assert client.get("/", buffered=True).text == "ok"
    assert client.get(STATS_PATH).get_json()["stats"]["reserves"] == 2


def test_flask_stats_url_is_opt_in(memcached: MemcachedServer) -> None:
    app = Flask("stats")
    app.config.update(
        MCPOOL_SERVERS=memcached.address,
        MCPOOL_SERVER_TIMEOUT=SERVER_TIMEOUT,
        MCPOOL_STATS_URL=STATS_PATH,
    )
    memcache = MemcachePool(app)

    @app.get("/")
    def index() -> str:
        return str(memcache.client.get("statsapp"))

    plain = Flask("no stats")
    plain.config["MCPOOL_SERVERS"] = memcached.address
    MemcachePool(plain)
    try:
        client = app.test_client()
        client.get("/")
        document = client.get(STATS_PATH).get_json()
        assert document["pid"] == os.getpid()
        assert document["stats"]["reserves"] == 1
        assert plain.test_client().get(STATS_PATH).status_code == 404
    finally:
        MemcachePool.get_state(app).pool.close()
        MemcachePool.get_state(plain).pool.close()


def test_cli_stats_says_it_shows_its_own_process(memcached: MemcachedServer) -> None:
    app = Flask("cli")
    app.config.update(
        MCPOOL_SERVERS=memcached.address, MCPOOL_SERVER_TIMEOUT=SERVER_TIMEOUT
    )
    MemcachePool(app)
    try:
        result = app.test_cli_runner().invoke(args=["mcpool", "stats"])
        assert result.exit_code == 0, result.output
        assert f"the pool of this CLI process, pid {os.getpid()}" in result.output
        assert "--url" in result.output
        assert f"  server {memcached.address}: available since " in result.output
        bad = app.test_cli_runner().invoke(
            args=["mcpool", "stats", "--url", f"http://127.0.0.1:{free_port()}/"]
        )
        assert bad.exit_code == 1 and "could not read pool statistics" in bad.output
    finally:
        MemcachePool.get_state(app).pool.close()


# -- under gunicorn, two worker processes --------------------------------------


def finish(sock: socket.socket, rest: bytes = b"\r\n") -> bytes:
    """Send the rest of a request on *sock*; the body of the 200 reply."""
    with sock:
        sock.sendall(rest)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1:2] == [b"200"], head
    return body


def get_json(port: int, sock: socket.socket | None = None) -> dict[str, Any]:
    """``GET STATS_PATH``; on *sock* when given (it holds all but its end)."""
    if sock is None:
        sock = start_request(port)
    document: dict[str, Any] = json.loads(finish(sock))
    return document


def start_request(port: int) -> socket.socket:
    """A connection that has sent all of a stats request but its last line:
    the sync worker that accepts it waits for the rest, and serves nothing
    else meanwhile."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(f"GET {STATS_PATH} HTTP/1.0\r\nHost: 127.0.0.1\r\n".encode())
    return sock


@contextlib.contextmanager
def gunicorn_sync(port: int, env: dict[str, str], log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                tool("gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "-k",
                "sync",
                "--timeout",
                "120",
                "examples.flask_app:create_app()",
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode}:\n{tail(log)}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not listen within {START_TIMEOUT} s")
            time.sleep(0.1)
        yield
    finally:
        stop(process, signal.SIGTERM)


def test_under_gunicorn_each_worker_reports_its_own_pid_and_counts(
    fresh_memcached: MemcachedServer, tmp_path: Path
) -> None:
    port = free_port()
    env = dict(
        os.environ,
        MCPOOL_SERVERS=fresh_memcached.address,
        MCPOOL_POOL_SIZE="1",
        MCPOOL_POOL_TIMEOUT="60",
        MCPOOL_SERVER_TIMEOUT="10",
        MCPOOL_STATS_URL=STATS_PATH,
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    env.pop("PYTEST_CURRENT_TEST", None)
    requests = 10
    with gunicorn_sync(port, env, tmp_path / "gunicorn.log"):
        for _ in range(requests):
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            assert finish(sock, b"GET / HTTP/1.0\r\n\r\n") == b"hello from memcached"
        # The kernel hands connections to accept() in the order they came,
        # so the first worker to accept takes the half-sent request and waits
        # on it: the whole request that follows is served by the other.
        held = start_request(port)
        other = get_json(port)
        first = get_json(port, held)
        url = f"http://127.0.0.1:{port}{STATS_PATH}"
        app = Flask("reader")
        app.config["MCPOOL_SERVERS"] = fresh_memcached.address
        MemcachePool(app)
        try:
            read = app.test_cli_runner().invoke(args=["mcpool", "stats", "--url", url])
        finally:
            MemcachePool.get_state(app).pool.close()
    assert first["pid"] != other["pid"]
    assert os.getpid() not in (first["pid"], other["pid"])
    # Each worker counts its own requests; together, every request once.
    assert first["stats"]["reserves"] + other["stats"]["reserves"] == requests
    assert read.exit_code == 0, read.output
    assert "which answered " + url in read.output
    assert any(
        f"the pool of process {pid}," in read.output
        for pid in (first["pid"], other["pid"])
    )
    assert f"  server {fresh_memcached.address}: available since " in read.output
    for document in (first, other):
        [server] = document["stats"]["servers"]
        assert server["address"] == fresh_memcached.address and server["available"]
