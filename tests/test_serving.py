"""ThreadPoolingMixIn under load, faults and shutdown, on real loopback sockets."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mcpool.serving import ThreadPoolingMixIn, WorkerStats

WAIT = 10.0  # generous: the machine is shared; nothing here should take long


class Gate:
    """Holds 'block' requests until opened; counts those that arrived."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.changed = threading.Condition()
        self.entered = 0

    def enter(self) -> None:
        with self.changed:
            self.entered += 1
            self.changed.notify_all()
        assert self.opened.wait(WAIT), "the test never opened the gate"

    def wait_entered(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.entered == count, WAIT)


class LineHandler(socketserver.StreamRequestHandler):
    """Reads one command line and answers with the worker thread's name.

    ``block`` waits at the server's gate, ``raise`` fails, anything else
    answers at once.
    """

    server: PoolServer

    def handle(self) -> None:
        command = self.rfile.readline().strip()
        if command == b"raise":
            raise RuntimeError("handler failed on purpose")
        if command == b"block":
            self.server.gate.enter()
        self.wfile.write(threading.current_thread().name.encode() + b"\n")


class PoolServer(ThreadPoolingMixIn, socketserver.TCPServer):
    allow_reuse_address = True

    def __init__(self, **settings: Any) -> None:
        self.gate = Gate()
        self.errors: list[tuple[Any, BaseException | None]] = []
        super().__init__(("127.0.0.1", 0), LineHandler, **settings)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        self.errors.append((client_address, sys.exc_info()[1]))


def ask(server: PoolServer, command: bytes) -> bytes:
    """Send one command on a new connection; return the reply (b"" if none)."""
    with socket.create_connection(server.server_address[:2], timeout=WAIT) as sock:
        sock.sendall(command + b"\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        return reply.strip()


class Clients:
    """Client threads whose replies are kept for the test to check."""

    def __init__(self, server: PoolServer) -> None:
        self.server = server
        self.threads: list[threading.Thread] = []
        self.replies: list[bytes] = []
        self.failures: list[BaseException] = []

    def send(self, command: bytes, count: int = 1) -> None:
        for _ in range(count):
            thread = threading.Thread(target=self._ask, args=(command,))
            thread.start()
            self.threads.append(thread)

    def _ask(self, command: bytes) -> None:
        try:
            self.replies.append(ask(self.server, command))
        except BaseException as exc:  # reported by join()
            self.failures.append(exc)

    def join(self) -> list[bytes]:
        for thread in self.threads:
            thread.join(WAIT)
            assert not thread.is_alive(), "a client got no reply"
        assert self.failures == []
        return self.replies


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "-worker-" in t.name]


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start servers in a thread; shut each down and close it afterwards."""
    started: list[tuple[PoolServer, threading.Thread]] = []

    def start(**settings: Any) -> PoolServer:
        server = PoolServer(**settings)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,))
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.gate.opened.set()
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
    assert worker_threads() == []


def wait_for(server: PoolServer, predicate: Any) -> WorkerStats:
    assert server.wait_for_workers(predicate, WAIT), server.worker_stats()
    return server.worker_stats()


def test_serving_starts_min_workers(serve: Any) -> None:
    server = serve(min_workers=3, max_workers=8, min_spare_workers=0)
    stats = wait_for(server, lambda s: s.workers == 3)
    assert (stats.busy, stats.idle, stats.queued) == (0, 3, 0)
    assert ask(server, b"hello").startswith(b"PoolServer-worker-")


def test_pool_grows_to_max_then_queues_then_shrinks_to_min_when_idle(
    serve: Any,
) -> None:
    server = serve(min_workers=1, max_workers=4, min_spare_workers=0, idle_timeout=0.05)
    clients = Clients(server)
    clients.send(b"block", 6)

    # Four workers hold four requests; the other two wait in the queue.
    stats = wait_for(server, lambda s: s.busy == 4 and s.queued == 2)
    assert (stats.workers, stats.idle, stats.peak_workers) == (4, 0, 4)
    server.gate.wait_entered(4)

    server.gate.opened.set()
    replies = clients.join()
    assert len(replies) == 6
    assert len(set(replies)) <= 4  # no request had a thread of its own

    # Idle past idle_timeout, the extra workers exit and are not replaced.
    stats = wait_for(
        server, lambda s: s.workers == 1 and s.retired == 3 and s.handled == 6
    )
    assert (stats.busy, stats.queued, stats.errors) == (0, 0, 0)
    assert stats.peak_workers == 4
    assert ask(server, b"after") != b""


def test_spare_workers_are_started_ahead_of_need(serve: Any) -> None:
    server = serve(min_workers=1, max_workers=5, min_spare_workers=2)
    wait_for(server, lambda s: s.workers == 2 and s.idle == 2)
    clients = Clients(server)
    clients.send(b"block", 2)
    stats = wait_for(server, lambda s: s.busy == 2)
    assert (stats.workers, stats.idle) == (4, 2)
    clients.send(b"block", 2)
    # Five is the cap: the fourth request gets the last worker, no spare left.
    stats = wait_for(server, lambda s: s.busy == 4)
    assert (stats.workers, stats.idle, stats.queued) == (5, 1, 0)
    server.gate.opened.set()
    clients.join()


def test_light_load_is_served_by_one_worker_so_the_others_retire(serve: Any) -> None:
    # Idle workers form a stack: the most recently idle one takes the next
    # request, the others stay idle long enough to time out. Handing work
    # round-robin would reset every worker's idle timer and never shrink.
    server = serve(min_workers=1, max_workers=3, min_spare_workers=0, idle_timeout=0.3)
    clients = Clients(server)
    clients.send(b"block", 3)
    wait_for(server, lambda s: s.busy == 3)
    server.gate.opened.set()
    clients.join()
    # A request every few milliseconds: with round-robin hand-out each of the
    # three workers would get one every ~15 ms, far below the idle timeout.
    deadline = time.monotonic() + WAIT
    while server.worker_stats().workers > 1 and time.monotonic() < deadline:
        assert ask(server, b"tick") != b""
        time.sleep(0.005)
    stats = server.worker_stats()
    assert (stats.workers, stats.retired) == (1, 2)


def test_a_raising_handler_goes_to_handle_error_and_the_worker_goes_on(
    serve: Any,
) -> None:
    server = serve(min_workers=1, max_workers=1, min_spare_workers=0)
    assert ask(server, b"raise") == b""  # the connection is closed, no reply
    assert ask(server, b"again") == b"PoolServer-worker-1"
    # The client has its reply when the socket closes, just before the count.
    stats = wait_for(server, lambda s: s.handled == 2)
    assert (stats.workers, stats.started, stats.handled, stats.errors) == (1, 1, 2, 1)
    [(address, exc)] = server.errors
    assert address[0] == "127.0.0.1"
    assert isinstance(exc, RuntimeError)


def test_shutdown_finishes_accepted_requests_and_joins_every_worker() -> None:
    server = PoolServer(min_workers=2, max_workers=3, min_spare_workers=0)
    serving = threading.Thread(target=server.serve_forever, args=(0.05,))
    serving.start()
    clients = Clients(server)
    clients.send(b"block", 5)
    wait_for(server, lambda s: s.busy == 3 and s.queued == 2)

    stopping = threading.Thread(target=server.shutdown)
    stopping.start()
    stopping.join(0.2)
    assert stopping.is_alive(), "shutdown returned while requests were running"
    server.gate.opened.set()
    stopping.join(WAIT)
    assert not stopping.is_alive()
    # Everything accepted before the shutdown was answered.
    assert len(clients.join()) == 5
    server.server_close()
    serving.join(WAIT)
    assert worker_threads() == []
    stats = server.worker_stats()
    assert (stats.workers, stats.busy, stats.queued, stats.handled) == (0, 0, 0, 5)


def test_server_close_without_serve_forever_joins_lazily_started_workers() -> None:
    server = PoolServer(min_workers=2, max_workers=2, min_spare_workers=0)
    assert server.worker_stats().workers == 0  # nothing runs before a request
    client = Clients(server)
    client.send(b"handle_request")
    server.handle_request()
    assert len(client.join()) == 1
    assert len(worker_threads()) == 2
    server.server_close()
    assert worker_threads() == []


def test_a_stopped_server_serves_again() -> None:
    server = PoolServer(min_workers=1, max_workers=2, min_spare_workers=0)
    try:
        for _ in range(2):
            serving = threading.Thread(target=server.serve_forever, args=(0.05,))
            serving.start()
            assert ask(server, b"ping").startswith(b"PoolServer-worker-")
            server.shutdown()
            serving.join(WAIT)
            assert worker_threads() == []
    finally:
        server.server_close()
    assert server.worker_stats().started == 2


def test_shutdown_from_a_worker_does_not_deadlock() -> None:
    class SelfStopping(PoolServer):
        def finish_request(self, request: Any, client_address: Any) -> None:
            super().finish_request(request, client_address)
            self.shutdown()

    server = SelfStopping(min_workers=1, max_workers=1, min_spare_workers=0)
    serving = threading.Thread(target=server.serve_forever, args=(0.05,))
    serving.start()
    assert ask(server, b"stop") != b""
    serving.join(WAIT)
    assert not serving.is_alive()
    server.server_close()  # joins the worker that stopped the server
    assert worker_threads() == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_workers": 0}, "max_workers must be >= 1, got 0"),
        (
            {"min_workers": 5, "max_workers": 4},
            r"min_workers must be within 0..max_workers \(4\), got 5",
        ),
        ({"min_workers": -1}, "min_workers must be within"),
        (
            {"min_spare_workers": 40},
            r"min_spare_workers must be within 0..max_workers \(32\), got 40",
        ),
        ({"idle_timeout": 0}, "idle_timeout must be > 0 seconds"),
    ],
)
def test_bad_settings_are_refused_before_the_socket_is_bound(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PoolServer(**settings)
    server = PoolServer(min_workers=0, max_workers=1)
    try:
        assert server.worker_stats().max_workers == 1
    finally:
        server.server_close()
