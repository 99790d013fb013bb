"""OpenTelemetry metrics for a pool, under the semantic conventions' names.

:func:`instrument` registers, on a meter of the global (or a given)
``MeterProvider``, the database client connection-pool metrics of the
OpenTelemetry semantic conventions (``db.client.connection.*``), each with
the attribute ``db.client.connection.pool.name`` set to the pool's name:

.. code-block:: python

    from mcpool import ClientPool
    from mcpool.otel import instrument

    pool = ClientPool(master, 8)
    instrument(pool)

The counts are read from :meth:`~mcpool.Pool.stats` when the SDK collects;
the times are recorded as they happen, by a :class:`~mcpool.PoolListener`
(which switches the pool's timings on). Needs ``pip install 'mcpool[otel]'``
(the OpenTelemetry API; the application brings the SDK and an exporter).
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Iterable
from typing import Any

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"mcpool.otel needs the OpenTelemetry API ({exc}); "
        "install it with: pip install 'mcpool[otel]'",
        name=exc.name,
    ) from exc

from .histogram import BUCKETS
from .pool import Pool
from .servers import ServerState, parse_server
from .telemetry import PoolListener

__all__ = ["POOL_NAME", "Instrumentation", "instrument"]

#: The attribute that names the pool on every metric.
POOL_NAME = "db.client.connection.pool.name"
#: The attributes that name a server on the per-server metrics.
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
_STATE = "db.client.connection.state"


class _Instruments:
    """The instruments of one meter, shared by every pool instrumented on it:
    each name is registered once, and its callback observes every pool."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.pools: tuple[Instrumentation, ...] = ()
        bounds = list(BUCKETS)
        gauges = [
            (
                "count",
                "{connection}",
                self._count,
                "The number of connections "
                "that are currently in state described by the state attribute",
            ),
            (
                "idle.max",
                "{connection}",
                self._idle_max,
                "The maximum number of idle open connections allowed",
            ),
            (
                "idle.min",
                "{connection}",
                self._idle_min,
                "The minimum number of idle open connections allowed",
            ),
            (
                "max",
                "{connection}",
                self._max,
                "The maximum number of open connections allowed",
            ),
            (
                "pending_requests",
                "{request}",
                self._pending,
                "The number of current pending requests for an open connection",
            ),
        ]
        for name, unit, callback, description in gauges:
            meter.create_observable_up_down_counter(
                f"db.client.connection.{name}",
                callbacks=[callback],
                unit=unit,
                description=description,
            )
        # Per server, for a pool of mcpool.Client (PoolStats.servers): not in
        # the conventions, so under mcpool's own names.
        meter.create_observable_counter(
            "mcpool.server.unavailable",
            callbacks=[self._unavailable],
            unit="{request}",
            description="Requests that failed because the memcached server did "
            "not answer",
        )
        meter.create_observable_counter(
            "mcpool.server.ejections",
            callbacks=[self._ejections],
            unit="{ejection}",
            description="Times the memcached server went from available to unavailable",
        )
        meter.create_observable_gauge(
            "mcpool.server.available",
            callbacks=[self._available],
            unit="1",
            description="1 while the memcached server answers, 0 while it does not",
        )
        meter.create_observable_counter(
            "db.client.connection.timeouts",
            callbacks=[self._timeouts],
            unit="{timeout}",
            description="The number of connection timeouts that have occurred "
            "trying to obtain a connection from the pool",
        )
        self.create_time = meter.create_histogram(
            "db.client.connection.create_time",
            unit="s",
            description="The time it took to create a new connection",
            explicit_bucket_boundaries_advisory=bounds,
        )
        self.wait_time = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool",
            explicit_bucket_boundaries_advisory=bounds,
        )
        self.use_time = meter.create_histogram(
            "db.client.connection.use_time",
            unit="s",
            description="The time between borrowing a connection and returning "
            "it to the pool",
            explicit_bucket_boundaries_advisory=bounds,
        )

    # The counts, read when the SDK collects.

    def _count(self, options: CallbackOptions) -> Iterable[Observation]:
        for each in self.pools:
            stats = each.pool.stats()
            yield Observation(stats.idle, {**each.attributes, _STATE: "idle"})
            yield Observation(stats.in_use, {**each.attributes, _STATE: "used"})

    def _idle_max(self, options: CallbackOptions) -> Iterable[Observation]:
        for each in self.pools:
            spare = each.pool.max_spare
            yield from _limit(each, each.pool.max_size if spare is None else spare)

    def _idle_min(self, options: CallbackOptions) -> Iterable[Observation]:
        for each in self.pools:
            yield from _limit(each, each.pool.min_idle)

    def _max(self, options: CallbackOptions) -> Iterable[Observation]:
        for each in self.pools:
            yield from _limit(each, each.pool.max_size)

    def _pending(self, options: CallbackOptions) -> Iterable[Observation]:
        for each in self.pools:
            yield Observation(each.pool.stats().waiting, each.attributes)

    def _timeouts(self, options: CallbackOptions) -> Iterable[Observation]:
        for each in self.pools:
            yield Observation(each.pool.stats().timeouts, each.attributes)

    def _unavailable(self, options: CallbackOptions) -> Iterable[Observation]:
        for server, attributes in self._servers():
            yield Observation(server.unavailable, attributes)

    def _ejections(self, options: CallbackOptions) -> Iterable[Observation]:
        for server, attributes in self._servers():
            yield Observation(server.ejections, attributes)

    def _available(self, options: CallbackOptions) -> Iterable[Observation]:
        for server, attributes in self._servers():
            yield Observation(int(server.available), attributes)

    def _servers(self) -> Iterable[tuple[ServerState, dict[str, Any]]]:
        for each in self.pools:
            for server in each.pool.stats().servers:
                yield server, {**each.attributes, **server_attributes(server)}


def server_attributes(server: ServerState) -> dict[str, Any]:
    """``server.address`` and ``server.port`` (the conventions' attributes) of
    a server, or ``server.address`` alone for a UNIX socket."""
    try:
        parsed = parse_server(server.address)
    except ValueError:
        return {SERVER_ADDRESS: server.address}
    if parsed.path is not None or parsed.port is None:
        return {SERVER_ADDRESS: parsed.path or server.address}
    return {SERVER_ADDRESS: parsed.host, SERVER_PORT: parsed.port}


def _limit(each: Instrumentation, value: int) -> Iterable[Observation]:
    # A ThreadMappedPool without max_size has no limit to report.
    if value < sys.maxsize:
        yield Observation(value, each.attributes)


# One set of instruments per meter provider.
_instruments: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_instruments_lock = threading.Lock()


class Instrumentation(PoolListener):
    """What :func:`instrument` returns: one pool's metrics, until
    :meth:`uninstrument`."""

    def __init__(self, pool: Pool[Any], instruments: _Instruments) -> None:
        self.pool = pool
        self.attributes = {POOL_NAME: pool.name}
        self.instruments = instruments

    def uninstrument(self) -> None:
        """Stop recording and reporting this pool's metrics."""
        with _instruments_lock:
            pools = self.instruments.pools
            self.instruments.pools = tuple(p for p in pools if p is not self)
        try:
            self.pool.remove_listener(self)
        except ValueError:
            pass  # already removed

    # The times, recorded as they happen.

    def on_create(self, pool: Any, seconds: float) -> None:
        self.instruments.create_time.record(seconds, self.attributes)

    def on_reserve(self, pool: Any, waited: float) -> None:
        self.instruments.wait_time.record(waited, self.attributes)

    def on_release(self, pool: Any, used: float) -> None:
        self.instruments.use_time.record(used, self.attributes)


def instrument(
    pool: Pool[Any], *, meter_provider: MeterProvider | None = None
) -> Instrumentation:
    """Report *pool*'s metrics through OpenTelemetry.

    Registers ``db.client.connection.count`` (``state`` ``idle`` and
    ``used``), ``.idle.max``, ``.idle.min``, ``.max``, ``.pending_requests``,
    ``.timeouts``, and the histograms ``.create_time``, ``.wait_time`` and
    ``.use_time`` in seconds, all with ``db.client.connection.pool.name``.

    :param pool: any mcpool pool; name it (``name=``) if two pools of a
        process share their servers.
    :param meter_provider: by default the global one
        (:func:`opentelemetry.metrics.get_meter_provider`).
    :returns: the instrumentation; its ``uninstrument()`` stops it.

    >>> from mcpool.otel import instrument
    >>> instrument(pool)  # doctest: +SKIP

    .. versionadded:: 0.1
    """
    provider = meter_provider or metrics.get_meter_provider()
    with _instruments_lock:
        instruments = _instruments.get(provider)
        if instruments is None:
            instruments = _Instruments(provider.get_meter("mcpool"))
            _instruments[provider] = instruments
        instrumentation = Instrumentation(pool, instruments)
        instruments.pools = (*instruments.pools, instrumentation)
    pool.add_listener(instrumentation)
    return instrumentation
