"""A WSGI app that serves a pool's live statistics as JSON.

.. code-block:: python

    from mcpool import Client, ClientPool, PoolMiddleware, StatsApp

    pool = ClientPool(Client(["127.0.0.1:11211"]), 8)
    stats = StatsApp(pool)
    app = PoolMiddleware(my_app, pool)

    def application(environ, start_response):
        if environ.get("PATH_INFO") == "/_mcpool/stats":
            return stats(environ, start_response)
        return app(environ, start_response)

A pool lives in one process: under a server with several worker processes
(gunicorn ``--workers 4``, uWSGI ``--processes``) each worker has a pool of
its own, and a request for the statistics is answered by whichever worker
the server gives it to. The document carries that worker's ``pid``, so that
scrapes of different workers can be told apart. ``flask mcpool stats
--url`` reads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .health import HealthCheck, check_health
from .stats import PoolStats

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["StatsApp", "StatsSource", "stats_document"]


class StatsSource(Protocol):
    """What :class:`StatsApp` needs of a pool: ``stats()`` returning a
    :class:`~mcpool.PoolStats`, and ``closed``. :class:`~mcpool.ClientPool`,
    :class:`~mcpool.ThreadMappedPool` and :class:`~mcpool.Pool` qualify."""

    def stats(self) -> PoolStats: ...

    @property
    def closed(self) -> bool: ...


def stats_document(
    pool: StatsSource, check: HealthCheck | None = None
) -> dict[str, Any]:
    """The JSON-ready record :class:`StatsApp` serves: ``pid``, the pool's
    class as ``pool``, its :class:`~mcpool.PoolStats` fields as ``stats``
    (with each server's state in ``stats["servers"]`` for a pool of
    :class:`mcpool.Client`: :class:`mcpool.servers.ServerState`), and the
    verdict of :mod:`mcpool.health` as ``health``: ``healthy``,
    ``problems``, ``wait_p99`` and ``timeouts``.

    :param check: judges the window since its previous call; without it,
        the pool's whole life is the window.

    >>> stats_document(pool)  # doctest: +SKIP
    {'pid': 4242, 'pool': 'ClientPool', 'stats': {'max_size': 8, ...},
     'health': {'healthy': True, 'problems': [], 'wait_p99': None, 'timeouts': 0}}

    .. versionadded:: 0.1
    """
    health = check() if check is not None else check_health(pool)
    return {
        "pid": os.getpid(),
        "pool": type(pool).__name__,
        "stats": dataclasses.asdict(health.stats),
        "health": {
            "healthy": health.healthy,
            "problems": list(health.problems),
            "wait_p99": health.wait_p99,
            "timeouts": health.timeouts,
        },
    }


class StatsApp:
    """A WSGI app answering ``GET`` (and ``HEAD``) with *pool*'s
    :func:`stats_document` as JSON; other methods get 405.

    Its ``health`` judges the time since the previous request (see
    :class:`mcpool.health.HealthCheck`, whose thresholds *max_wait_p99* and
    *max_timeouts* are). The answer is 200 either way: it reports, and a
    load balancer's health check is better served by a view of its own.

    Mount it at a path of your choice; it reads nothing from the request
    but its method. The statistics name server addresses and counts, no
    keys or values; still, serve it where only operators reach it.

    >>> StatsApp(pool)  # doctest: +SKIP
    <StatsApp of <ClientPool ...>>

    .. versionadded:: 0.1
    """

    def __init__(
        self, pool: StatsSource, *, max_wait_p99: float = 0.1, max_timeouts: int = 0
    ) -> None:
        self.pool = pool
        #: judges each scrape's window (:class:`mcpool.health.HealthCheck`)
        self.health = HealthCheck(
            pool, max_wait_p99=max_wait_p99, max_timeouts=max_timeouts
        )

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            body = b"only GET and HEAD\n"
            start_response(
                "405 Method Not Allowed",
                [
                    ("Allow", "GET, HEAD"),
                    ("Content-Type", "text/plain"),
                    ("Content-Length", str(len(body))),
                ],
            )
            return [body]
        body = json.dumps(stats_document(self.pool, self.health), default=str).encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b""] if method == "HEAD" else [body]

    def __repr__(self) -> str:
        return f"<StatsApp of {self.pool!r}>"
