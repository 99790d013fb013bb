"""Is the pool healthy? The numbers a person would be paged for.

:func:`check_health` judges a pool by what an on-call engineer acts on:
every memcached server down, callers waiting too long for a client (the
99th percentile of the waits), reservations that timed out. The waits and
timeouts are those of a window: since the stats of the previous check, which
:class:`HealthCheck` keeps for you.

.. code-block:: python

    from mcpool.health import HealthCheck

    check = HealthCheck(pool, max_wait_p99=0.05)

    @app.get("/health/memcached")
    def memcached_health():
        health = check()
        return {"ok": health.healthy, "problems": health.problems}, (
            200 if health else 503
        )
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from .stats import PoolStats

__all__ = ["Health", "HealthCheck", "check_health"]


@dataclass(frozen=True)
class Health:
    """The verdict of :func:`check_health`; true when healthy.

    .. versionadded:: 0.1
    """

    #: no problem found
    healthy: bool
    #: what is wrong, one sentence each, with the numbers
    problems: tuple[str, ...]
    #: the 99th percentile of the window's waits, in seconds; ``None``
    #: without timings or without reservations in the window
    wait_p99: float | None
    #: reservations that timed out in the window
    timeouts: int
    #: the stats the verdict was made from: pass them as *since* next time
    stats: PoolStats

    def __bool__(self) -> bool:
        return self.healthy


def check_health(
    pool: Any,
    *,
    since: PoolStats | None = None,
    max_wait_p99: float = 0.1,
    max_timeouts: int = 0,
) -> Health:
    """Judge *pool* by its numbers since *since* (or since it was made).

    Unhealthy when any of these holds:

    * the pool is closed;
    * every memcached server is marked down (a pool that knows its
      servers: ``stats().servers``);
    * the 99th percentile of the window's waits for a client is above
      *max_wait_p99* seconds (needs ``timings=True``, or an exporter; the
      check is skipped without timings);
    * more than *max_timeouts* reservations timed out in the window.

    :param since: the :attr:`Health.stats` of the previous check; the
        window is the time since then. Do not call the pool's ``pop_stats()``
        between checks: it empties the histograms the window is taken from.
    :raises ValueError: a negative threshold.

    >>> health = check_health(pool, max_wait_p99=0.05)  # doctest: +SKIP
    >>> health.healthy, health.problems  # doctest: +SKIP
    (False, ("3 reservations timed out (more than 0 allowed)",))

    .. versionadded:: 0.1
    """
    _check_thresholds(max_wait_p99, max_timeouts)
    stats: PoolStats = pool.stats()
    problems: list[str] = []
    if pool.closed:
        problems.append(f"{stats.name}: the pool is closed")
    servers = getattr(stats, "servers", None)
    if servers and not any(server.available for server in servers):
        problems.append(
            f"{stats.name}: every server is down ("
            + ", ".join(str(server.address) for server in servers)
            + ")"
        )
    window = stats.wait_time
    if window is not None and since is not None and since.wait_time is not None:
        window = window - since.wait_time
        if min(window.counts) < 0:  # reset in between: judge what is there
            window = stats.wait_time
    wait_p99 = window.quantile(0.99) if window is not None else None
    if wait_p99 is not None and wait_p99 > max_wait_p99:
        problems.append(
            f"{stats.name}: 99% of waits for a client took up to {wait_p99:.3f} s "
            f"(more than {max_wait_p99:.3f} s); raise max_size or hold clients "
            "for less time"
        )
    timeouts = stats.timeouts - (since.timeouts if since is not None else 0)
    if timeouts < 0:  # a forked child started counting afresh
        timeouts = stats.timeouts
    if timeouts > max_timeouts:
        problems.append(
            f"{stats.name}: {timeouts} reservations timed out (more than "
            f"{max_timeouts} allowed)"
        )
    return Health(not problems, tuple(problems), wait_p99, timeouts, stats)


def _check_thresholds(max_wait_p99: float, max_timeouts: int) -> None:
    if not max_wait_p99 >= 0:  # also catches nan
        raise ValueError(f"max_wait_p99 must be seconds >= 0, got {max_wait_p99}")
    if max_timeouts < 0:
        raise ValueError(f"max_timeouts must be >= 0, got {max_timeouts}")


class HealthCheck:
    """:func:`check_health` with the window kept: each call judges the time
    since the previous call.

    :param pool: the pool to judge.
    :param max_wait_p99: see :func:`check_health`.
    :param max_timeouts: see :func:`check_health`.
    :raises ValueError: a negative threshold.

    >>> check = HealthCheck(pool, max_wait_p99=0.05)  # doctest: +SKIP
    >>> bool(check())  # doctest: +SKIP
    True

    .. versionadded:: 0.1
    """

    def __init__(
        self, pool: Any, *, max_wait_p99: float = 0.1, max_timeouts: int = 0
    ) -> None:
        _check_thresholds(max_wait_p99, max_timeouts)
        self.pool = pool
        self.max_wait_p99 = max_wait_p99
        self.max_timeouts = max_timeouts
        self._last: PoolStats | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Health:
        """Judge the pool since the previous call (the first: since it was made)."""
        with self._lock:
            health = check_health(
                self.pool,
                since=self._last,
                max_wait_p99=self.max_wait_p99,
                max_timeouts=self.max_timeouts,
            )
            self._last = health.stats
        return health
