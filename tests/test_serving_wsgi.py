"""make_server() and run(): a WSGI app on pooled workers, one memcached get per
request through a ClientPool."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pylibmc
import pytest
import werkzeug.serving

from examples.flask_app import create_app
from mcpool import ClientPool, ThreadMappedPool
from mcpool.flask import MemcachePool
from mcpool.serving import PoolingWSGIServer, make_server
from mcpool.testing import MemcachedServer, free_port

WAIT = 10.0

StartResponse = Callable[..., Any]


def greeting_app(
    pool: ClientPool | ThreadMappedPool,
) -> Callable[[dict[str, Any], StartResponse], Any]:
    """One memcached get per request; ``/raise`` fails after its get."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        with pool.reserve() as mc:
            value = mc.get("serving:greeting")
        if environ["PATH_INFO"] == "/raise":
            raise RuntimeError("the app failed on purpose")
        body = f"{value} from {threading.current_thread().name}".encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return app


def get(server: werkzeug.serving.BaseWSGIServer, path: str = "/") -> tuple[int, str]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


@pytest.fixture
def pool(master: pylibmc.Client) -> Iterator[ClientPool]:
    master.set("serving:greeting", "hello")
    with ClientPool(master, 4) as pool:
        yield pool


@pytest.fixture
def serve() -> Iterator[Callable[..., PoolingWSGIServer]]:
    started: list[tuple[PoolingWSGIServer, threading.Thread]] = []

    def start(app: Any, **settings: Any) -> PoolingWSGIServer:
        server = make_server(app, **settings)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,))
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join(WAIT)
        assert not thread.is_alive()
    assert [t for t in threading.enumerate() if "-worker-" in t.name] == []


def test_concurrent_requests_share_few_workers_and_clients(
    serve: Any, pool: ClientPool
) -> None:
    server = serve(greeting_app(pool), min_workers=2, max_workers=4)
    with ThreadPoolExecutor(16) as clients:
        replies = list(clients.map(lambda _: get(server), range(200)))
    assert {status for status, _ in replies} == {200}
    values = {body.split(" from ")[0] for _, body in replies}
    threads = {body.split(" from ")[1] for _, body in replies}
    assert values == {"hello"}
    assert all(name.startswith("PoolingWSGIServer-worker-") for name in threads)
    assert len(threads) <= 4
    # A client has its reply when the socket closes, just before the count.
    assert server.wait_for_workers(lambda s: s.handled == 200, WAIT)
    assert server.worker_stats().peak_workers <= 4
    stats = pool.stats()
    assert stats.in_use == 0 and stats.created <= 4 and stats.reserves == 200


def test_an_app_error_is_a_500_and_the_next_request_is_served(
    serve: Any, pool: ClientPool
) -> None:
    server = serve(greeting_app(pool), min_workers=1, max_workers=1)
    status, _ = get(server, "/raise")
    assert status == 500
    assert get(server) == (200, "hello from PoolingWSGIServer-worker-1")
    assert pool.stats().in_use == 0
    assert server.worker_stats().started == 1


def test_a_passed_through_error_is_logged_and_the_worker_goes_on(
    serve: Any, pool: ClientPool, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(
        greeting_app(pool), min_workers=1, max_workers=1, passthrough_errors=True
    )
    with caplog.at_level(logging.ERROR, logger="mcpool.serving"):
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            get(server, "/raise")  # the connection closes without a response
        assert server.wait_for_workers(lambda s: s.errors == 1, WAIT)
    assert "handle_error raised; the worker goes on" in caplog.text
    assert get(server) == (200, "hello from PoolingWSGIServer-worker-1")
    stats = server.worker_stats()
    assert (stats.workers, stats.started, stats.errors) == (1, 1, 1)


def test_each_connection_carries_one_request(serve: Any, pool: ClientPool) -> None:
    # A keep-alive connection would hold a worker between requests.
    server = serve(greeting_app(pool), min_workers=1, max_workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):  # the server closes after one reply
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 200 OK")
    assert reply.endswith(b"hello from PoolingWSGIServer-worker-1")


def test_serves_the_flask_example_on_pooled_workers(
    serve: Any, memcached: MemcachedServer
) -> None:
    # A generous server timeout: a busy machine is slow, and this test is not
    # about timeouts.
    app = create_app(
        {"MCPOOL_SERVERS": memcached.address, "MCPOOL_SERVER_TIMEOUT": 10.0}
    )
    pool = MemcachePool.get_state(app).pool
    try:
        server = serve(app, min_workers=1, max_workers=4, min_spare_workers=0)
        with ThreadPoolExecutor(12) as clients:
            replies = list(clients.map(lambda _: get(server), range(120)))
        assert set(replies) == {(200, "hello from memcached")}
        assert server.wait_for_workers(lambda s: s.handled == 120, WAIT)
        workers = server.worker_stats()
        assert workers.started <= 4 and workers.errors == 0
        stats = pool.stats()
        assert stats.in_use == 0 and stats.created <= 4 and stats.reserves == 120
    finally:
        pool.close()


def test_thread_mapped_clients_stay_bound_to_pooled_workers(
    serve: Any, master: pylibmc.Client
) -> None:
    master.set("serving:greeting", "hello")

    def bindings_for_120_requests(server: Any, pool: ThreadMappedPool) -> int:
        with ThreadPoolExecutor(8) as clients:
            replies = list(clients.map(lambda _: get(server), range(120)))
        assert {status for status, _ in replies} == {200}
        return pool.stats().reserves

    # A pooled worker binds a client on its first request and keeps it.
    with ThreadMappedPool(master, max_size=8) as pool:
        pooled = serve(greeting_app(pool), min_workers=1, max_workers=4)
        assert bindings_for_120_requests(pooled, pool) == pooled.worker_stats().started
        assert pooled.worker_stats().started <= 4

    # A thread per request binds (and gives back) a client per request. A
    # thread gives its client back when it ends, which on a busy machine can
    # be a while after its response: a request may wait past the default 2 s.
    with ThreadMappedPool(master, max_size=8, timeout=60) as pool:
        threaded = werkzeug.serving.make_server(
            "127.0.0.1", 0, greeting_app(pool), threaded=True
        )
        serving = threading.Thread(target=threaded.serve_forever, args=(0.05,))
        serving.start()
        try:
            assert bindings_for_120_requests(threaded, pool) == 120
        finally:
            threaded.shutdown()
            serving.join(WAIT)
            threaded.server_close()


RUN_SCRIPT = """
import signal, sys, pylibmc
# Ctrl-C raises KeyboardInterrupt even when the suite runs where SIGINT is
# ignored (a background job), which children would inherit.
signal.signal(signal.SIGINT, signal.default_int_handler)
from mcpool import ClientPool
from mcpool.serving import run

pool = ClientPool(pylibmc.Client([sys.argv[1]]), 4)

def app(environ, start_response):
    with pool.reserve() as mc:
        value = mc.get("serving:greeting")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [value.encode()]

run(app, "127.0.0.1", int(sys.argv[2]), min_workers=2, max_workers=4)
print("stopped cleanly", flush=True)
"""


def test_run_serves_until_interrupted_then_exits_cleanly(
    memcached: MemcachedServer, master: pylibmc.Client
) -> None:
    master.set("serving:greeting", "hello from run")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, memcached.address, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + WAIT
        while True:
            try:
                with urllib.request.urlopen(url, timeout=WAIT) as response:
                    assert response.read() == b"hello from run"
                    break
            except urllib.error.URLError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "run() never answered"
                time.sleep(0.05)
        with ThreadPoolExecutor(8) as clients:
            bodies = list(
                clients.map(lambda _: urllib.request.urlopen(url).read(), range(40))
            )
        assert set(bodies) == {b"hello from run"}
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, err
    assert out == "stopped cleanly\n"
    assert f"Running on http://127.0.0.1:{port}" in err
