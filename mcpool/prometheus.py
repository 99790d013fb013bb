"""Prometheus metrics for a pool, correct under gunicorn and uWSGI.

:func:`instrument` writes a pool's numbers into ``prometheus_client``
metrics named as OpenTelemetry's semantic conventions come out in
Prometheus (``db_client_connection_count``, ``..._wait_time_seconds``, ...),
labelled ``db_client_connection_pool_name``:

.. code-block:: python

    from mcpool import ClientPool
    from mcpool.prometheus import instrument

    pool = ClientPool(master, 8)
    instrument(pool)

In a server that forks workers, each worker keeps its own pool, and a
scrape reaches one worker. ``prometheus_client``'s multiprocess mode (the
``PROMETHEUS_MULTIPROC_DIR`` environment variable) makes every worker write
its metrics into files that the scraped worker adds up; it supports no
custom collectors, so the pool's gauges are set as its state changes (on
every event, from :meth:`~mcpool.Pool.usage`) rather than read at scrape
time, and are summed over the live workers (``multiprocess_mode="livesum"``).
Needs ``pip install 'mcpool[prometheus]'``.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
    from prometheus_client import Histogram as PrometheusHistogram
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"mcpool.prometheus needs prometheus_client ({exc}); "
        "install it with: pip install 'mcpool[prometheus]'",
        name=exc.name,
    ) from exc

from .histogram import BUCKETS
from .pool import Pool
from .servers import parse_server
from .telemetry import PoolListener

__all__ = ["POOL_LABEL", "Exporter", "instrument"]

#: The label that names the pool on every metric.
POOL_LABEL = "db_client_connection_pool_name"
#: Seconds between writes of the per-server metrics, at most.
SERVER_INTERVAL = 1.0
_STATE = "db_client_connection_state"


class _Metrics:
    """The metric families of one registry, shared by every pool exported
    to it; each pool is a label value."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        labels = [POOL_LABEL]

        def gauge(name: str, documentation: str, *extra: str) -> Gauge:
            return Gauge(
                f"db_client_connection_{name}",
                documentation,
                [*labels, *extra],
                registry=registry,
                multiprocess_mode="livesum",
            )

        def histogram(name: str, documentation: str) -> PrometheusHistogram:
            return PrometheusHistogram(
                f"db_client_connection_{name}_seconds",
                documentation,
                labels,
                registry=registry,
                buckets=BUCKETS,
            )

        self.count = gauge(
            "count",
            "The number of connections that are currently in state described "
            "by the state attribute",
            _STATE,
        )
        self.idle_max = gauge(
            "idle_max", "The maximum number of idle open connections allowed"
        )
        self.idle_min = gauge(
            "idle_min", "The minimum number of idle open connections allowed"
        )
        self.max = gauge("max", "The maximum number of open connections allowed")
        self.pending_requests = gauge(
            "pending_requests",
            "The number of current pending requests for an open connection",
        )
        self.timeouts = Counter(
            "db_client_connection_timeouts",
            "The number of connection timeouts that have occurred trying to "
            "obtain a connection from the pool",
            labels,
            registry=registry,
        )
        self.create_time = histogram(
            "create_time", "The time it took to create a new connection"
        )
        self.wait_time = histogram(
            "wait_time", "The time it took to obtain an open connection from the pool"
        )
        self.use_time = histogram(
            "use_time",
            "The time between borrowing a connection and returning it to the pool",
        )
        # Per server, for a pool of mcpool.Client (PoolStats.servers).
        server_labels = [*labels, "server_address", "server_port"]
        self.server_unavailable = Counter(
            "mcpool_server_unavailable",
            "Requests that failed because the memcached server did not answer",
            server_labels,
            registry=registry,
        )
        self.server_ejections = Counter(
            "mcpool_server_ejections",
            "Times the memcached server went from available to unavailable",
            server_labels,
            registry=registry,
        )
        self.server_up = Gauge(
            "mcpool_server_up",
            "1 while the memcached server answers, 0 while it does not (the "
            "lowest of the live processes' views)",
            server_labels,
            registry=registry,
            multiprocess_mode="livemin",
        )


_metrics: dict[int, tuple[CollectorRegistry | None, _Metrics]] = {}
_metrics_lock = threading.Lock()


def _metrics_for(registry: CollectorRegistry | None) -> _Metrics:
    with _metrics_lock:
        known = _metrics.get(id(registry))
        if known is None or known[0] is not registry:
            known = registry, _Metrics(registry)
            _metrics[id(registry)] = known
        return known[1]


class Exporter(PoolListener):
    """What :func:`instrument` returns: writes one pool's metrics until
    :meth:`uninstrument`."""

    def __init__(self, pool: Pool[Any], metrics: _Metrics) -> None:
        self.pool = pool
        name = pool.name
        self.idle = metrics.count.labels(name, "idle")
        self.used = metrics.count.labels(name, "used")
        self.pending = metrics.pending_requests.labels(name)
        self.timeouts = metrics.timeouts.labels(name)
        self.create_time = metrics.create_time.labels(name)
        self.wait_time = metrics.wait_time.labels(name)
        self.use_time = metrics.use_time.labels(name)
        self._limits = (
            metrics.idle_max.labels(name),
            metrics.idle_min.labels(name),
            metrics.max.labels(name),
        )
        self.metrics = metrics
        # Usage is read and written under one lock, so that a slow thread
        # never writes an older reading over a newer one.
        self._lock = threading.Lock()
        self._last: tuple[int, int, int] | None = None
        # Server counters already added, per address: the pool gives totals,
        # a multiprocess counter takes increments.
        self._servers_seen: dict[str, tuple[int, int]] = {}
        self._servers_due = 0.0
        self._last_limits: tuple[int, int, int] | None = None
        self.refresh()
        self.refresh_servers()

    def _write_limits(self) -> None:
        """Write ``max_size``, ``min_idle`` and ``max_spare`` if the pool has
        other ones now than last written (``resize()``, a new ``max_spare``)."""
        pool = self.pool
        spare = pool.max_spare
        limits = (
            pool.max_size if spare is None else spare,
            pool.min_idle,
            pool.max_size,
        )
        if limits == self._last_limits:
            return
        for gauge, value in zip(self._limits, limits, strict=True):
            # An uncapped ThreadMappedPool has no limit to report.
            if value < sys.maxsize:
                gauge.set(value)
        self._last_limits = limits

    def refresh(self) -> None:
        """Write the pool's idle, used and waiting counts, and its limits if
        they changed, now; done on every event."""
        with self._lock:
            self._write_limits()
            usage = self.pool.usage()
            last = self._last
            if usage == last:
                return
            idle, used, waiting = usage
            # Only what changed: each write in multiprocess mode is a
            # locked write into a memory-mapped file.
            if last is None or idle != last[0]:
                self.idle.set(idle)
            if last is None or used != last[1]:
                self.used.set(used)
            if last is None or waiting != last[2]:
                self.pending.set(waiting)
            self._last = usage

    def refresh_servers(self) -> None:
        """Write each server's state and counters (for a pool of
        :class:`mcpool.Client`).

        Done on the pool's events at most once a second; a server's state
        changes outside them, so an idle worker shows it when traffic comes.
        """
        self._servers_due = time.monotonic() + SERVER_INTERVAL
        # Read outside the lock: stats() may free a lost item, whose discard
        # event comes back here.
        servers = self.pool.stats().servers
        with self._lock:
            name = self.pool.name
            metrics = self.metrics
            for server in servers:
                labels = (name, *_server_labels(server.address))
                seen = self._servers_seen.get(server.address, (0, 0))
                now = (server.unavailable, server.ejections)
                if now[0] < seen[0] or now[1] < seen[1]:
                    seen = (0, 0)  # counted afresh, in a forked child
                if now[0] > seen[0]:
                    metrics.server_unavailable.labels(*labels).inc(now[0] - seen[0])
                if now[1] > seen[1]:
                    metrics.server_ejections.labels(*labels).inc(now[1] - seen[1])
                if server.address not in self._servers_seen:  # create the series
                    metrics.server_unavailable.labels(*labels).inc(0)
                    metrics.server_ejections.labels(*labels).inc(0)
                self._servers_seen[server.address] = now
                metrics.server_up.labels(*labels).set(int(server.available))

    def _maybe_refresh_servers(self) -> None:
        if time.monotonic() >= self._servers_due:
            self.refresh_servers()

    def uninstrument(self) -> None:
        """Stop writing this pool's metrics (the last values stay)."""
        try:
            self.pool.remove_listener(self)
        except ValueError:
            pass  # already removed

    def on_create(self, pool: Any, seconds: float) -> None:
        self.create_time.observe(seconds)

    def on_reserve(self, pool: Any, waited: float) -> None:
        self.wait_time.observe(waited)
        self.refresh()

    def on_wait(self, pool: Any) -> None:
        self.refresh()

    def on_release(self, pool: Any, used: float) -> None:
        self.use_time.observe(used)
        self.refresh()
        self._maybe_refresh_servers()

    def on_discard(self, pool: Any, reason: str) -> None:
        self.refresh()
        self._maybe_refresh_servers()

    def on_timeout(self, pool: Any) -> None:
        self.timeouts.inc()
        self.refresh()

    def on_fork_reset(self, pool: Any) -> None:
        # A new process: prometheus_client starts its values afresh (its own
        # files in multiprocess mode), so everything is written again. A new
        # lock too: a thread of the parent may have held the old one.
        self._lock = threading.Lock()
        self._last = None
        self._last_limits = None
        self.refresh()
        # Not the servers: this may run while the child resets the pool
        # under the lock that the servers' own reset takes too; the next
        # event writes them.
        self._servers_seen = {}
        self._servers_due = 0.0


def instrument(
    pool: Pool[Any], *, registry: CollectorRegistry | None = REGISTRY
) -> Exporter:
    """Export *pool*'s metrics to Prometheus.

    Gauges ``db_client_connection_count`` (label
    ``db_client_connection_state``: ``idle``, ``used``),
    ``db_client_connection_idle_max``, ``..._idle_min``, ``..._max`` and
    ``..._pending_requests``; the counter ``db_client_connection_timeouts``
    (exposed as ``..._timeouts_total``); histograms
    ``db_client_connection_create_time_seconds``, ``..._wait_time_seconds``
    and ``..._use_time_seconds``. Every metric has the label
    ``db_client_connection_pool_name``, the pool's name. Gauges add up over
    the live processes in multiprocess mode.

    Adds a listener to the pool, so its timings are on from now.

    :param pool: any mcpool pool; give each pool of a process its own name.
    :param registry: where the metrics are registered; the default is
        ``prometheus_client``'s. In multiprocess mode the metrics are
        written to ``PROMETHEUS_MULTIPROC_DIR`` whatever the registry, and
        the scrape endpoint reads them with a ``MultiProcessCollector``.
    :returns: the exporter; its ``uninstrument()`` stops it.

    >>> from mcpool.prometheus import instrument
    >>> instrument(pool)  # doctest: +SKIP

    .. versionadded:: 0.1
    """
    exporter = Exporter(pool, _metrics_for(registry))
    pool.add_listener(exporter)
    return exporter


def _server_labels(address: str) -> tuple[str, str]:
    """``(server_address, server_port)``: the host and port, or a UNIX
    socket's path and ``""``."""
    try:
        parsed = parse_server(address)
    except ValueError:
        return address, ""
    if parsed.path is not None or parsed.host is None or parsed.port is None:
        return parsed.path or address, ""
    return parsed.host, str(parsed.port)
