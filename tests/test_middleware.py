"""PoolMiddleware against a real memcached: when the client is reserved, and
that it is released exactly once on every way a request can end."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pylibmc
import pytest
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.serving import make_server
from werkzeug.test import Client

from mcpool import ClientPool, PoolMiddleware, RequestClient, ThreadMappedPool
from mcpool.middleware import FORWARDED_METHODS

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
    return lambda data: None


def call(app: Any, path: str = "/") -> Iterable[bytes]:
    """Call a WSGI app as a server would, up to (not including) iteration."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    return app(environ, start_response)  # type: ignore[no-any-return]


@pytest.fixture
def pool(master: pylibmc.Client) -> Iterator[ClientPool]:
    with ClientPool(master, 4) as pool:
        yield pool


def in_use(pool: ClientPool) -> int:
    return pool.stats().in_use


def key(name: str) -> str:
    return f"mw:{name}:{uuid.uuid4().hex}"


# -- reserve on first use, release on close --------------------------------


def test_request_that_never_touches_memcached_reserves_nothing(
    pool: ClientPool,
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        assert isinstance(environ["mcpool.client"], RequestClient)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"no cache"]

    response = Client(PoolMiddleware(app, pool)).get("/", buffered=True)
    assert response.data == b"no cache"
    stats = pool.stats()
    assert (stats.reserves, stats.created, stats.in_use) == (0, 0, 0)


def test_client_is_reserved_on_first_use_and_released_when_response_closes(
    pool: ClientPool, master: pylibmc.Client
) -> None:
    k = key("first-use")
    seen: list[int] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        mc = environ["mcpool.client"]
        seen.append(in_use(pool))
        mc.set(k, "stored")
        seen.append(in_use(pool))
        assert mc.get(k) == "stored"
        assert mc[k] == "stored" and k in mc
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    response = call(PoolMiddleware(app, pool))
    assert seen == [0, 1]
    assert list(response) == [b"ok"]
    assert in_use(pool) == 1, "held until close(), not released on return"
    response.close()  # type: ignore[attr-defined]
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.reserves) == (0, 1, 1)
    assert master.get(k) == "stored"


def test_one_client_per_request_however_often_it_is_used(pool: ClientPool) -> None:
    clients: list[Any] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        mc = environ["mcpool.client"]
        for _ in range(5):
            mc.get(key("many"))
            clients.append(mc.client)
        start_response("200 OK", [])
        return [b""]

    Client(PoolMiddleware(app, pool)).get("/", buffered=True)
    assert len({id(c) for c in clients}) == 1
    assert pool.stats().reserves == 1


def test_werkzeug_test_client_round_trip_stores_and_reads(pool: ClientPool) -> None:
    k = key("roundtrip")

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        mc = environ["mcpool.client"]
        count = mc.incr(k) if mc.add(k, 1) is False else 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(count).encode()]

    client = Client(PoolMiddleware(app, pool))
    bodies = [client.get("/", buffered=True).data for _ in range(5)]
    assert bodies == [b"1", b"2", b"3", b"4", b"5"]
    stats = pool.stats()
    assert (stats.in_use, stats.created, stats.reserves) == (0, 1, 5)


def test_no_per_request_state_on_the_middleware(pool: ClientPool) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        environ["mcpool.client"].get(key("state"))
        start_response("200 OK", [])
        return [b""]

    middleware = PoolMiddleware(app, pool)
    before = dict(vars(middleware))
    first, second = call(middleware), call(middleware)
    assert vars(middleware) == before
    assert in_use(pool) == 2
    first.close()  # type: ignore[attr-defined]
    second.close()  # type: ignore[attr-defined]
    assert in_use(pool) == 0


def test_custom_environ_key(pool: ClientPool) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        assert "mcpool.client" not in environ
        environ["cache"].get(key("custom"))
        start_response("200 OK", [])
        return [b""]

    Client(PoolMiddleware(app, pool, environ_key="cache")).get("/", buffered=True)
    assert pool.stats().reserves == 1 and in_use(pool) == 0


# -- streaming and early close --------------------------------------------


def test_streaming_body_keeps_the_client_until_close(
    pool: ClientPool, master: pylibmc.Client
) -> None:
    k = key("stream")
    master.set(k, "chunk")
    during: list[int] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        mc = environ["mcpool.client"]
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Iterator[bytes]:
            for _ in range(3):
                during.append(in_use(pool))
                yield mc.get(k).encode()

        return body()

    response = call(PoolMiddleware(app, pool))
    assert in_use(pool) == 0, "the body has not run yet: nothing reserved"
    assert b"".join(response) == b"chunkchunkchunk"
    assert during == [0, 1, 1]
    assert in_use(pool) == 1, "exhausted but not closed: still the request's"
    response.close()  # type: ignore[attr-defined]
    assert in_use(pool) == 0
    assert pool.stats().reserves == 1


def test_streaming_under_the_werkzeug_test_client(pool: ClientPool) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        mc = environ["mcpool.client"]
        mc.get(key("tc-stream"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        mc.get(key("tc-stream"))
        yield b"b"

    response = Client(PoolMiddleware(app, pool)).get("/")
    assert response.get_data() == b"ab"
    assert in_use(pool) == 1
    response.close()
    assert in_use(pool) == 0


def test_early_close_runs_the_app_cleanup_before_the_release(
    pool: ClientPool, master: pylibmc.Client
) -> None:
    k = key("early-close")
    events: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        mc = environ["mcpool.client"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            while True:
                yield b"x" * 1024
        except GeneratorExit:
            events.append("generator-exit")
            raise
        finally:
            # The app's cleanup may still use the request's client.
            mc.set(k, "cleaned up")
            events.append(f"cleanup in_use={in_use(pool)}")

    response = call(PoolMiddleware(app, pool))
    iterator = iter(response)
    next(iterator)
    next(iterator)
    response.close()  # type: ignore[attr-defined]
    assert events == ["generator-exit", "cleanup in_use=1"]
    assert in_use(pool) == 0
    assert master.get(k) == "cleaned up"


def test_use_after_release_raises_instead_of_sharing_a_client(
    pool: ClientPool,
) -> None:
    kept: list[RequestClient] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        kept.append(environ["mcpool.client"])
        kept[0].get(key("after"))
        start_response("200 OK", [])
        return [b""]

    Client(PoolMiddleware(app, pool)).get("/", buffered=True)
    with pytest.raises(RuntimeError, match="already released"):
        kept[0].get(key("after"))
    assert kept[0].released and not kept[0].reserved
    stats = pool.stats()
    assert (stats.in_use, stats.reserves) == (0, 1)


def test_every_forwarded_method_is_a_client_method_and_reaches_it(
    pool: ClientPool, master: pylibmc.Client
) -> None:
    for name in FORWARDED_METHODS:
        assert callable(getattr(pylibmc.Client, name)), name
        assert name in vars(RequestClient), name
    k = key("forwarded")
    mc = RequestClient(pool)
    assert mc.add(k, 1) and mc.incr(k, 2) == 3 and mc.decr(k) == 2
    assert mc.get_multi([k]) == {k: 2}
    assert mc.behaviors["tcp_nodelay"] == master.behaviors["tcp_nodelay"]
    assert in_use(pool) == 1 and pool.stats().reserves == 1
    mc.release()
    with pytest.raises(RuntimeError, match="already released"):
        mc.set(k, 5)
    with pytest.raises(RuntimeError, match="already released"):
        mc.get_stats()
    assert in_use(pool) == 0 and master.get(k) == 2


def test_pylibmcs_own_pool_works_too(master: pylibmc.Client) -> None:
    pylibmc_pool = pylibmc.ClientPool(master, 2)
    k = key("pylibmc-pool")

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        environ["mcpool.client"].set(k, "v")
        start_response("200 OK", [])
        return [b"ok"]

    response = call(PoolMiddleware(app, pylibmc_pool))
    assert list(response) == [b"ok"]
    assert pylibmc_pool.qsize() == 1, "held until close()"
    response.close()  # type: ignore[attr-defined]
    assert pylibmc_pool.qsize() == 2
    assert master.get(k) == "v"


def test_close_before_iteration_and_close_twice_release_once(
    pool: ClientPool, count_releases: Any
) -> None:
    counting = count_releases(pool)

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        environ["mcpool.client"].get(key("twice"))
        start_response("200 OK", [])
        return iter([b"never sent"])

    response = call(PoolMiddleware(app, counting))
    assert counting.checkouts == 1
    response.close()  # type: ignore[attr-defined]
    response.close()  # type: ignore[attr-defined]
    assert counting.releases == 1
    assert in_use(pool) == 0


# -- exception paths --------------------------------------------------------


def test_app_raising_releases_and_keeps_a_healthy_client(
    pool: ClientPool, count_releases: Any
) -> None:
    counting = count_releases(pool)

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        environ["mcpool.client"].get(key("raise"))
        raise ValueError("the app failed")

    with pytest.raises(ValueError, match="the app failed"):
        call(PoolMiddleware(app, counting))
    assert counting.releases == 1
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.discarded) == (0, 1, 0)


def test_app_raising_a_fatal_client_error_discards_the_client(
    pool: ClientPool,
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        environ["mcpool.client"].get(key("fatal"))
        raise pylibmc.ServerDown("the server went away")

    with pytest.raises(pylibmc.ServerDown):
        call(PoolMiddleware(app, pool))
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.discarded) == (0, 0, 1)

    # The next request gets a fresh, working client.
    k = key("after-fatal")

    def next_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        mc = environ["mcpool.client"]
        mc.set(k, "fine")
        start_response("200 OK", [])
        return [mc.get(k).encode()]

    assert Client(PoolMiddleware(next_app, pool)).get("/", buffered=True).data == (
        b"fine"
    )
    assert pool.stats().created == 2


def test_app_raising_before_using_the_client_holds_nothing(
    pool: ClientPool, count_releases: Any
) -> None:
    counting = count_releases(pool)

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        raise KeyError("early")

    with pytest.raises(KeyError):
        call(PoolMiddleware(app, counting))
    assert (counting.checkouts, counting.releases) == (0, 0)


def test_iteration_raising_releases_without_waiting_for_close(
    pool: ClientPool, count_releases: Any
) -> None:
    counting = count_releases(pool)

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        mc = environ["mcpool.client"]
        start_response("200 OK", [])
        mc.get(key("iter-raise"))
        yield b"first"
        raise OSError("the body failed half way")

    response = call(PoolMiddleware(app, counting))
    iterator = iter(response)
    assert next(iterator) == b"first"
    with pytest.raises(OSError, match="half way"):
        next(iterator)
    assert counting.releases == 1 and in_use(pool) == 0
    response.close()  # type: ignore[attr-defined]
    assert counting.releases == 1
    assert pool.stats().discarded == 0


def test_inner_close_raising_still_releases(
    pool: ClientPool, count_releases: Any
) -> None:
    counting = count_releases(pool)
    closed: list[int] = []

    class Body:
        def __init__(self, mc: RequestClient) -> None:
            self.mc = mc

        def __iter__(self) -> Iterator[bytes]:
            self.mc.get(key("close-raise"))
            return iter([b"a", b"b"])

        def close(self) -> None:
            closed.append(in_use(pool))
            raise RuntimeError("close failed")

    def app(environ: Environ, start_response: StartResponse) -> Body:
        start_response("200 OK", [])
        return Body(environ["mcpool.client"])

    response = call(PoolMiddleware(app, counting))
    assert list(response) == [b"a", b"b"]
    with pytest.raises(RuntimeError, match="close failed"):
        response.close()  # type: ignore[attr-defined]
    assert closed == [1], "the original iterable's close() ran, client still held"
    assert counting.releases == 1 and in_use(pool) == 0
    response.close()  # type: ignore[attr-defined]
    assert closed == [1] and counting.releases == 1


def test_inner_close_raising_a_fatal_error_discards_the_client(
    pool: ClientPool,
) -> None:
    class Body(list[bytes]):
        def close(self) -> None:
            raise pylibmc.ConnectionError("lost the server while closing")

    def app(environ: Environ, start_response: StartResponse) -> Body:
        environ["mcpool.client"].get(key("close-fatal"))
        start_response("200 OK", [])
        return Body([b"x"])

    response = call(PoolMiddleware(app, pool))
    list(response)
    with pytest.raises(pylibmc.ConnectionError):
        response.close()  # type: ignore[attr-defined]
    stats = pool.stats()
    assert (stats.in_use, stats.discarded) == (0, 1)


def test_original_iterable_is_closed_not_its_iterator(pool: ClientPool) -> None:
    calls: list[str] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            calls.append("iter")
            return iter([b"body"])

        def close(self) -> None:
            calls.append("close")

    def app(environ: Environ, start_response: StartResponse) -> Body:
        environ["mcpool.client"].get(key("orig"))
        start_response("200 OK", [])
        return Body()

    response = call(PoolMiddleware(app, pool))
    assert list(response) == [b"body"]
    response.close()  # type: ignore[attr-defined]
    assert calls == ["iter", "close"]
    assert in_use(pool) == 0


def test_pool_timeout_reaches_the_app_and_leaves_nothing_reserved(
    master: pylibmc.Client,
) -> None:
    from mcpool import PoolTimeout

    with ClientPool(master, 1, timeout=0.05) as pool:
        holder = pool.checkout()

        def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
            try:
                environ["mcpool.client"].get(key("timeout"))
            except PoolTimeout:
                start_response("503 Service Unavailable", [])
                return [b"busy"]
            start_response("200 OK", [])
            return [b"ok"]

        client = Client(PoolMiddleware(app, pool))
        assert client.get("/", buffered=True).status_code == 503
        holder.release()
        assert client.get("/", buffered=True).data == b"ok"
        stats = pool.stats()
        assert (stats.in_use, stats.timeouts) == (0, 1)


# -- werkzeug's LintMiddleware ----------------------------------------------


def counter_app(pool: ClientPool, k: str) -> Callable[..., Iterator[bytes]]:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        mc = environ["mcpool.client"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"count="
        yield str(mc.incr(k)).encode()

    return app


@pytest.mark.parametrize("order", ["lint-outside", "lint-inside"])
def test_lint_middleware_finds_no_fault(
    pool: ClientPool, master: pylibmc.Client, order: str
) -> None:
    # Lint's warnings are errors under this suite's filterwarnings.
    k = key("lint")
    master.set(k, 0)
    app = counter_app(pool, k)
    wrapped = (
        LintMiddleware(PoolMiddleware(app, pool))
        if order == "lint-outside"
        else PoolMiddleware(LintMiddleware(app), pool)
    )
    client = Client(wrapped)
    for n in range(1, 4):
        response = client.get("/")
        assert response.get_data() == f"count={n}".encode()
        assert in_use(pool) == 1
        response.close()
        assert in_use(pool) == 0


# -- a real threaded server on loopback -------------------------------------


class ServerThread:
    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_threaded_server_many_concurrent_requests(master: pylibmc.Client) -> None:
    prefix = key("threaded")

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        mc = environ["mcpool.client"]
        name = environ["PATH_INFO"].strip("/")
        mc.set(f"{prefix}:{name}", name)
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"got="
        yield mc.get(f"{prefix}:{name}").encode()

    errors: list[BaseException] = []
    wrong: list[tuple[str, int, bytes]] = []

    with ClientPool(master, 3, timeout=10) as pool:
        with ServerThread(PoolMiddleware(app, pool)) as server:

            def worker(n: int) -> None:
                try:
                    for i in range(15):
                        name = f"w{n}-{i}"
                        status, body = server.get(f"/{name}")
                        if (status, body) != (200, f"got={name}".encode()):
                            wrong.append((name, status, body))
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not errors and not wrong
            # The server closes each response after sending it; the last
            # close may still be running as the client reads the body.
            assert wait_until(lambda: pool.stats().in_use == 0)
        stats = pool.stats()
        assert stats.reserves == 8 * 15
        assert stats.created <= 3 and stats.discarded == 0


def test_threaded_server_client_disconnect_mid_stream_releases(
    master: pylibmc.Client,
) -> None:
    k = key("disconnect")
    master.set(k, "y" * 4096)
    started = threading.Event()
    closed = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        mc = environ["mcpool.client"]
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        if environ["PATH_INFO"] != "/stream":
            yield mc.get(k).encode()[:2]
            return
        try:
            while True:  # an endless body: only a disconnect ends it
                yield mc.get(k).encode() * 16
                started.set()
        finally:
            closed.set()

    with ClientPool(master, 2) as pool:
        with ServerThread(PoolMiddleware(app, pool)) as server:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
            received = b""
            while b"yyyy" not in received:
                received += sock.recv(4096)
            assert received.startswith(b"HTTP/1.1 200")
            assert started.wait(10)
            assert pool.stats().in_use == 1
            sock.close()  # the client goes away mid-body
            assert closed.wait(10), "the server never closed the body"
            assert wait_until(lambda: pool.stats().in_use == 0)
            # The pool serves the next request normally.
            assert server.get("/again") == (200, b"yy")
        stats = pool.stats()
        assert stats.discarded == 0 and stats.in_use == 0


# -- with a ThreadMappedPool ---------------------------------------------------


def test_thread_mapped_pool_keeps_the_threads_client_bound(
    master: pylibmc.Client,
) -> None:
    seen: list[Any] = []

    with ThreadMappedPool(master, 4) as pool:

        def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
            mc = environ["mcpool.client"]
            mc.get(key("tm"))
            with pool.reserve() as nested:  # code deeper in the app
                seen.append(nested is mc.client)
            seen.append(mc.client)
            start_response("200 OK", [])
            yield b"streamed"
            seen.append(mc.get(key("tm-stream")) is None)

        middleware = PoolMiddleware(app, pool)
        for _ in range(2):
            response = call(middleware)
            assert b"".join(response) == b"streamed"
            response.close()  # type: ignore[attr-defined]
        assert seen[0] is True and seen[2] is True
        assert seen[1] is seen[4], "the next request in this thread: same client"
        stats = pool.stats()
        assert (stats.created, stats.discarded) == (1, 0)
        # The client stays bound to this thread between requests, and goes
        # back when the thread lets go of it.
        pool.relinquish()
        assert pool.stats().in_use == 0


def test_thread_mapped_pool_under_a_thread_per_request_server(
    master: pylibmc.Client,
) -> None:
    prefix = key("tm-server")

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        mc = environ["mcpool.client"]
        name = environ["PATH_INFO"].strip("/")
        mc.set(f"{prefix}:{name}", name)
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield mc.get(f"{prefix}:{name}").encode()

    wrong: list[object] = []
    # A request's thread holds its client until the thread ends, which on a
    # busy machine can be a while after the response: a request may wait
    # longer than the default 2 s for one of the four.
    with ThreadMappedPool(master, 4, max_spare=4, timeout=60) as pool:
        with ServerThread(PoolMiddleware(app, pool)) as server:

            def worker(n: int) -> None:
                for i in range(10):
                    try:
                        status, body = server.get(f"/t{n}-{i}")
                    except OSError as exc:  # pragma: no cover - reported below
                        wrong.append(exc)
                        continue
                    if (status, body) != (200, f"t{n}-{i}".encode()):
                        wrong.append((status, body))

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            # Each request ran in a thread of its own; its client went back
            # to the pool when that thread ended.
            assert wait_until(lambda: pool.stats().in_use == 0)
        stats = pool.stats()
        assert wrong == []
        assert stats.created <= 4 and stats.discarded == 0
        assert stats.reserves == 40, "a thread per request: one binding each"
