"""A thread-pooling socketserver mix-in and a WSGI server that uses it.

:class:`ThreadPoolingMixIn` replaces :class:`socketserver.ThreadingMixIn`:
instead of a new thread per request, long-lived worker threads take requests
from a queue. The pool starts *min_workers* threads, keeps at least
*min_spare_workers* of them idle, grows up to *max_workers* when every worker
is busy, and lets a worker go after *idle_timeout* seconds without work.
Worker threads that outlive a request are what a thread-mapped client wants,
and a server under load stops paying for one thread start per request.

.. code-block:: python

    import socketserver
    from mcpool.serving import ThreadPoolingMixIn

    class EchoServer(ThreadPoolingMixIn, socketserver.TCPServer):
        max_workers = 16

    with EchoServer(("127.0.0.1", 0), EchoHandler, min_workers=2) as server:
        server.serve_forever()

:func:`make_server` and :func:`run` do the same for a WSGI application over
Werkzeug's development server:

.. code-block:: python

    from mcpool.serving import run

    run(app, "127.0.0.1", 8000, min_workers=4, max_workers=32)
"""

from __future__ import annotations

import logging
import math
import socket
import socketserver
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    # The mix-in relies on the server methods (finish_request, handle_error,
    # shutdown_request) of the class it is mixed into.
    _ServerBase = socketserver.BaseServer
else:
    _ServerBase = object

__all__ = [
    "PoolingWSGIRequestHandler",
    "PoolingWSGIServer",
    "ThreadPoolingMixIn",
    "WorkerStats",
    "make_server",
    "run",
]

logger = logging.getLogger("mcpool.serving")

_Request: TypeAlias = "socket.socket | tuple[bytes, socket.socket]"


class _Job:
    __slots__ = ("request", "client_address")

    def __init__(self, request: Any, client_address: Any) -> None:
        self.request = request
        self.client_address = client_address


# Handed to an idle worker to make it exit.
_STOP = _Job(None, None)


class _Worker:
    """One worker thread's mailbox. ``signal`` is held until a job is handed."""

    __slots__ = ("signal", "job", "stop")

    def __init__(self, job: _Job | None) -> None:
        self.signal = threading.Lock()
        self.signal.acquire()
        self.job = job
        self.stop = False


@dataclass(frozen=True)
class WorkerStats:
    """A snapshot of a :class:`ThreadPoolingMixIn` server's worker pool."""

    #: worker threads alive (busy + idle)
    workers: int
    #: workers running a request
    busy: int
    #: workers waiting for a request
    idle: int
    #: requests accepted and waiting for a worker (only when all are busy)
    queued: int
    min_workers: int
    max_workers: int
    min_spare_workers: int
    #: the most workers alive at once since the server was made
    peak_workers: int
    #: worker threads started since the server was made
    started: int
    #: worker threads that exited after *idle_timeout* without work
    retired: int
    #: requests finished (successfully or not)
    handled: int
    #: requests whose handler raised; each went to ``handle_error``
    errors: int


class ThreadPoolingMixIn(_ServerBase):
    """Serve each request in a pooled, long-lived worker thread.

    Mix it into a :mod:`socketserver` server in place of
    :class:`~socketserver.ThreadingMixIn`. The accepting thread hands each
    request to the most recently idle worker, or starts a worker if none is
    idle and fewer than *max_workers* run, or queues it until a worker is
    free. Workers idle for *idle_timeout* seconds exit while more than
    *min_workers* are alive and more than *min_spare_workers* are idle, so the
    pool shrinks back to ``max(min_workers, min_spare_workers)``. Handing work
    to the most recently idle worker keeps the others idle long enough to
    retire under light load.

    A handler that raises goes to :meth:`~socketserver.BaseServer.handle_error`
    and the worker takes the next request. :meth:`shutdown`,
    :meth:`server_close` and the end of :meth:`serve_forever` stop the pool:
    requests already accepted are finished, then every worker thread is
    joined.

    Settings are class attributes, overridable per server with the keyword
    arguments of the same names.

    :param min_workers: workers started with the pool and kept when idle.
    :param max_workers: the most workers at once; further requests queue.
    :param min_spare_workers: start workers ahead of need so that at least
        this many are idle after each request is dispatched.
    :param idle_timeout: seconds an idle worker waits for a request before it
        may exit; ``math.inf`` keeps every worker.
    :raises ValueError: settings out of range.

    >>> class Server(ThreadPoolingMixIn, socketserver.TCPServer):  # doctest: +SKIP
    ...     max_workers = 8
    >>> server = Server(("127.0.0.1", 0), Handler, min_workers=2)  # doctest: +SKIP
    >>> server.worker_stats().workers  # doctest: +SKIP
    0
    """

    min_workers: int = 2
    max_workers: int = 32
    min_spare_workers: int = 1
    idle_timeout: float = 30.0
    #: whether worker threads are daemons (they are joined on close either way)
    daemon_threads: bool = False

    def __init__(
        self,
        *args: Any,
        min_workers: int | None = None,
        max_workers: int | None = None,
        min_spare_workers: int | None = None,
        idle_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        if min_workers is not None:
            self.min_workers = min_workers
        if max_workers is not None:
            self.max_workers = max_workers
        if min_spare_workers is not None:
            self.min_spare_workers = min_spare_workers
        if idle_timeout is not None:
            self.idle_timeout = idle_timeout
        self._check_settings()
        self._pool_lock = threading.Lock()
        self._pool_changed = threading.Condition(self._pool_lock)
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []  # a stack: the last idle is served first
        self._queue: deque[_Job] = deque()
        self._threads: set[threading.Thread] = set()
        self._running = False
        self._stopping = False
        self._peak_workers = 0
        self._started = 0
        self._retired = 0
        self._handled = 0
        self._errors = 0
        super().__init__(*args, **kwargs)

    def _check_settings(self) -> None:
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {self.max_workers}")
        if not 0 <= self.min_workers <= self.max_workers:
            raise ValueError(
                f"min_workers must be within 0..max_workers ({self.max_workers}), "
                f"got {self.min_workers}"
            )
        if not 0 <= self.min_spare_workers <= self.max_workers:
            raise ValueError(
                "min_spare_workers must be within 0..max_workers "
                f"({self.max_workers}), got {self.min_spare_workers}"
            )
        if not self.idle_timeout > 0:
            raise ValueError(
                f"idle_timeout must be > 0 seconds (math.inf for never), "
                f"got {self.idle_timeout}"
            )

    # -- observing --------------------------------------------------------

    def worker_stats(self) -> WorkerStats:
        """A consistent snapshot of the worker pool; see :class:`WorkerStats`."""
        with self._pool_lock:
            return self._stats_locked()

    def wait_for_workers(
        self, predicate: Callable[[WorkerStats], bool], timeout: float
    ) -> bool:
        """Block until *predicate* holds for :meth:`worker_stats`, or *timeout*.

        Woken by every change of the pool, so tests and drain scripts need no
        polling loop. Returns whether the predicate held. The predicate gets
        the snapshot and runs under the pool's lock: it must not call back
        into the server.

        >>> server.wait_for_workers(lambda s: s.idle == 2, 5)  # doctest: +SKIP
        True
        """
        with self._pool_changed:
            return self._pool_changed.wait_for(
                lambda: predicate(self._stats_locked()), timeout
            )

    def _stats_locked(self) -> WorkerStats:
        workers = len(self._workers)
        idle = len(self._idle)
        return WorkerStats(
            workers=workers,
            busy=workers - idle,
            idle=idle,
            queued=len(self._queue),
            min_workers=self.min_workers,
            max_workers=self.max_workers,
            min_spare_workers=self.min_spare_workers,
            peak_workers=self._peak_workers,
            started=self._started,
            retired=self._retired,
            handled=self._handled,
            errors=self._errors,
        )

    # -- socketserver hooks -----------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Start the workers, serve until :meth:`shutdown`, then stop them."""
        with self._pool_lock:
            if not self._running and not self._stopping:
                self._start_locked()
        try:
            super().serve_forever(poll_interval)
        finally:
            self._stop_workers()

    def process_request(self, request: _Request, client_address: Any) -> None:
        """Hand the request to an idle worker, a new one, or the queue."""
        job = _Job(request, client_address)
        with self._pool_lock:
            rejected = self._stopping
            if not rejected:
                if not self._running:
                    self._start_locked()
                if self._idle:
                    worker = self._idle.pop()
                    worker.job = job
                    worker.signal.release()
                elif len(self._workers) < self.max_workers:
                    self._spawn_locked(job)
                else:
                    self._queue.append(job)
                while (
                    len(self._idle) < self.min_spare_workers
                    and len(self._workers) < self.max_workers
                ):
                    self._spawn_locked(None)
                self._pool_changed.notify_all()
        if rejected:
            # Accepted during shutdown: no worker will take it.
            self.shutdown_request(request)

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever`, finish accepted requests, join the workers."""
        super().shutdown()
        self._stop_workers()

    def server_close(self) -> None:
        """Close the socket, finish accepted requests, join the workers."""
        super().server_close()
        self._stop_workers()

    # -- the pool ---------------------------------------------------------

    def _start_locked(self) -> None:
        self._running = True
        while len(self._workers) < max(self.min_workers, self.min_spare_workers):
            self._spawn_locked(None)

    def _spawn_locked(self, job: _Job | None) -> None:
        worker = _Worker(job)
        thread = threading.Thread(
            target=self._work,
            args=(worker,),
            name=f"{type(self).__name__}-worker-{self._started + 1}",
            daemon=self.daemon_threads,
        )
        self._workers.add(worker)
        if job is None:
            self._idle.append(worker)
        try:
            thread.start()
        except BaseException:
            self._workers.discard(worker)
            if job is None:
                self._idle.remove(worker)
            raise
        self._started += 1
        self._peak_workers = max(self._peak_workers, len(self._workers))
        self._threads = {t for t in self._threads if t.is_alive()}
        self._threads.add(thread)

    def _work(self, worker: _Worker) -> None:
        """A worker thread: serve the handed job, then the next, until retired."""
        job = worker.job
        worker.job = None
        try:
            if job is None:
                # Spawned idle: it is on the idle stack already.
                job = self._wait_idle(worker)
            while job is not None:
                failed = self._serve(job)
                job = self._next_job(worker, failed)
        finally:
            with self._pool_lock:
                if worker in self._workers:
                    # Left by an exception that is not an Exception (SystemExit
                    # from a handler): keep the counts true.
                    self._workers.discard(worker)
                    if worker in self._idle:
                        self._idle.remove(worker)
                    self._pool_changed.notify_all()

    def _serve(self, job: _Job) -> bool:
        """Run one request as ThreadingMixIn does; return whether it raised."""
        request, client_address = job.request, job.client_address
        try:
            self.finish_request(request, client_address)
        except Exception:
            try:
                self.handle_error(request, client_address)
            except Exception:
                # Werkzeug's handle_error re-raises with passthrough_errors;
                # there is no caller to pass it to in a worker thread.
                logger.exception("handle_error raised; the worker goes on")
            return True
        finally:
            self.shutdown_request(request)
        return False

    def _next_job(self, worker: _Worker, failed: bool) -> _Job | None:
        """The next request for *worker*, or ``None`` when it should exit.

        *failed* is whether the request it just served raised; it is counted
        under the same lock.
        """
        with self._pool_lock:
            self._handled += 1
            self._errors += failed
            self._pool_changed.notify_all()
            if self._queue:
                return self._queue.popleft()
            if worker.stop:
                self._retire_locked(worker)
                return None
            self._idle.append(worker)
        return self._wait_idle(worker)

    def _wait_idle(self, worker: _Worker) -> _Job | None:
        """Wait on the idle stack for a request; ``None`` when it should exit."""
        lock = self._pool_lock
        timeout = -1.0 if math.isinf(self.idle_timeout) else self.idle_timeout
        while True:
            handed = worker.signal.acquire(timeout=timeout)
            with lock:
                job = worker.job
                if job is not None:
                    if not handed:
                        # Handed between the timeout and this lock: re-arm.
                        worker.signal.acquire()
                    worker.job = None
                    if job is _STOP:
                        self._retire_locked(worker)
                        return None
                    return job
                if (
                    len(self._workers) > self.min_workers
                    and len(self._idle) > self.min_spare_workers
                ):
                    self._idle.remove(worker)
                    self._retire_locked(worker)
                    self._retired += 1
                    return None

    def _retire_locked(self, worker: _Worker) -> None:
        self._workers.discard(worker)
        self._pool_changed.notify_all()

    def _stop_workers(self) -> None:
        """Let busy workers drain the queue, stop idle ones, join them all."""
        current = threading.current_thread()
        with self._pool_lock:
            self._stopping = True
            for worker in self._workers:
                worker.stop = True
            while self._idle:
                worker = self._idle.pop()
                worker.job = _STOP
                worker.signal.release()
            threads = [t for t in self._threads if t is not current]
        for thread in threads:
            thread.join()
        with self._pool_lock:
            # A worker that called shutdown() itself cannot join itself; it
            # exits after its request and is joined by the next stop.
            self._threads.difference_update(threads)
            self._running = False
            self._stopping = False
            self._pool_changed.notify_all()


class PoolingWSGIRequestHandler(WSGIRequestHandler):
    """Werkzeug's request handler, one request per connection.

    A worker serves one connection at a time, so an HTTP/1.1 keep-alive
    connection would hold a worker while the client thinks; with more clients
    than *max_workers* the others would queue behind idle connections.
    Speaking HTTP/1.0 closes each connection after its response.
    """

    protocol_version = "HTTP/1.0"


class PoolingWSGIServer(ThreadPoolingMixIn, BaseWSGIServer):
    """Werkzeug's WSGI server with a pool of worker threads.

    Use :func:`make_server` to make one, :func:`run` to serve forever.
    """

    multithread = True
    #: a request stuck at exit does not keep the process alive; close() still
    #: joins every worker.
    daemon_threads = True


def make_server(
    app: WSGIApplication,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    min_workers: int = 2,
    max_workers: int = 32,
    min_spare_workers: int = 1,
    idle_timeout: float = 30.0,
    request_handler: type[WSGIRequestHandler] | None = None,
    passthrough_errors: bool = False,
    ssl_context: Any = None,
) -> PoolingWSGIServer:
    """Make a :class:`PoolingWSGIServer` for *app*, bound but not yet serving.

    Call ``serve_forever()`` on it (in a thread, for tests), ``shutdown()``
    from another thread to stop it, and ``server_close()`` to release the
    socket. ``port=0`` picks a free port; read it back from ``server.port``.

    :param app: the WSGI application.
    :param min_workers: see :class:`ThreadPoolingMixIn`, as are the other
        worker settings.
    :param request_handler: a :class:`werkzeug.serving.WSGIRequestHandler`
        subclass; :class:`PoolingWSGIRequestHandler` by default.
    :param passthrough_errors: as Werkzeug's; in a worker thread an error
        passed through is logged and the worker goes on.
    :param ssl_context: as Werkzeug's.
    :raises ValueError: worker settings out of range.

    >>> server = make_server(app, min_workers=2, max_workers=8)  # doctest: +SKIP
    >>> threading.Thread(target=server.serve_forever).start()  # doctest: +SKIP
    >>> urlopen(f"http://127.0.0.1:{server.port}/").status  # doctest: +SKIP
    200
    >>> server.shutdown()  # doctest: +SKIP
    """
    return PoolingWSGIServer(
        host,
        port,
        app,
        request_handler or PoolingWSGIRequestHandler,
        passthrough_errors,
        ssl_context,
        min_workers=min_workers,
        max_workers=max_workers,
        min_spare_workers=min_spare_workers,
        idle_timeout=idle_timeout,
    )


def run(
    app: WSGIApplication,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    min_workers: int = 2,
    max_workers: int = 32,
    min_spare_workers: int = 1,
    idle_timeout: float = 30.0,
    request_handler: type[WSGIRequestHandler] | None = None,
    passthrough_errors: bool = False,
    ssl_context: Any = None,
) -> None:
    """Serve *app* on *host*:*port* with pooled worker threads until Ctrl-C.

    The parameters are :func:`make_server`'s. On Ctrl-C the server stops
    accepting, finishes the requests it has, and joins its workers.

    >>> run(create_app(), "127.0.0.1", 8000, max_workers=16)  # doctest: +SKIP
    """
    server = make_server(
        app,
        host,
        port,
        min_workers=min_workers,
        max_workers=max_workers,
        min_spare_workers=min_spare_workers,
        idle_timeout=idle_timeout,
        request_handler=request_handler,
        passthrough_errors=passthrough_errors,
        ssl_context=ssl_context,
    )
    server.log_startup()
    server.serve_forever()
