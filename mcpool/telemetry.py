"""Pool timings and events: what a pool measures, and who it tells.

Switched on by ``timings=True`` on a pool, or by the first listener added
with :meth:`Pool.add_listener <mcpool.Pool.add_listener>`. Then every
reservation goes through the pool's locked path, which times the wait, the
use and the making of each item into fixed-bucket histograms (read them in
:meth:`~mcpool.Pool.stats`) and calls the listeners. Switched off, the pool
holds a :class:`NoTelemetry`, whose methods do nothing, and the lock-free
reserve and release run as before.

.. code-block:: python

    class SlowWaits(PoolListener):
        def on_reserve(self, pool, waited):
            if waited > 0.1:
                log.warning("%s: waited %.3f s for a client", pool.name, waited)

    pool.add_listener(SlowWaits())
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .errors import PoolTimeout
from .histogram import Histogram, TimeHistogram

__all__ = [
    "DISCARD_REASONS",
    "EXPORTERS",
    "NoTelemetry",
    "PoolListener",
    "Telemetry",
    "export_metrics",
]

logger = logging.getLogger("mcpool")

#: Why a pool discards an item, as :meth:`PoolListener.on_discard` is told.
DISCARD_REASONS = {
    "broken": "the with block raised an exception the pool's discard_on calls "
    "fatal, or the item was released with discard=True",
    "check": "the check hook refused it when it was about to be handed out",
    "reset": "the reset hook raised when it came back",
    "aged": "idle longer than max_idle, or past max_lifetime",
    "spare": "more than max_spare items were idle",
    "closed": "the pool was closed",
    "lost": "its reservation was dropped unreleased",
    "replaced": "resize() shrank the pool below it, or drain() replaces every item",
}


class PoolListener:
    """Receives a pool's events; override the methods you need.

    Each method is called once per event, in the thread that caused it,
    outside the pool's lock, in the order the events happened in that
    thread, once the pool's books show the event: :meth:`Pool.usage
    <mcpool.Pool.usage>` read in a listener counts the item just reserved
    as in use, the one just released as idle. An :class:`Exception` a
    listener raises is logged on the ``mcpool`` logger and the pool carries
    on. Times are in seconds.

    >>> class Count(PoolListener):
    ...     def __init__(self):
    ...         self.timeouts = 0
    ...     def on_timeout(self, pool):
    ...         self.timeouts += 1
    >>> pool.add_listener(Count())  # doctest: +SKIP

    .. versionadded:: 0.1
    """

    def on_create(self, pool: Any, seconds: float) -> None:
        """The factory made an item in *seconds*."""

    def on_reserve(self, pool: Any, waited: float) -> None:
        """A caller got an item after *waited* seconds (making it included)."""

    def on_wait(self, pool: Any) -> None:
        """A caller found no item free and joined the line."""

    def on_release(self, pool: Any, used: float) -> None:
        """A caller gave back an item it held for *used* seconds (after the
        item's :meth:`on_discard`, if the pool dropped it)."""

    def on_discard(self, pool: Any, reason: str) -> None:
        """The pool dropped an item; *reason* is a key of
        :data:`DISCARD_REASONS`."""

    def on_timeout(self, pool: Any) -> None:
        """A reservation gave up with :class:`~mcpool.PoolTimeout`."""

    def on_fork_reset(self, pool: Any) -> None:
        """In a forked child, the pool forgot the items of its parent.

        Runs inside :func:`os.fork`, or under the lock that serialises the
        child's resets (after a fork that ran no at-fork hooks): keep it
        short, and read the pool with :meth:`Pool.usage
        <mcpool.Pool.usage>` only; :meth:`~mcpool.Pool.stats` of a pool of
        :class:`mcpool.Client` would wait for that lock for good.
        """


class _Taken(Protocol):
    """What :class:`Telemetry` needs of a pool's slot."""

    taken_at: float | None


class Telemetry:
    """Timings and listeners of one pool; what the pool holds when on."""

    active = True

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.listeners: tuple[PoolListener, ...] = ()
        self._init_histograms()

    def _init_histograms(self) -> None:
        self.wait = TimeHistogram()
        self.use = TimeHistogram()
        self.create = TimeHistogram()

    def start(self) -> float:
        """The time now, to pass back to :meth:`reserved` or :meth:`created`."""
        return self.clock()

    def created(self, pool: Any, started: float) -> None:
        seconds = self.clock() - started
        self.create.record(seconds)
        for listener in self.listeners:
            _call(pool, listener.on_create, seconds)

    def reserved(self, pool: Any, slot: _Taken, started: float) -> None:
        now = slot.taken_at = self.clock()
        waited = now - started
        self.wait.record(waited)
        for listener in self.listeners:
            _call(pool, listener.on_reserve, waited)

    def released(self, slot: _Taken) -> float | None:
        """Record the use of an item coming back; the seconds, for
        :meth:`tell_released` once it is back."""
        taken_at = slot.taken_at
        if taken_at is None:
            return None  # taken before timings were on, or never handed out
        slot.taken_at = None
        used = self.clock() - taken_at
        self.use.record(used)
        return used

    def tell_released(self, pool: Any, used: float) -> None:
        for listener in self.listeners:
            _call(pool, listener.on_release, used)

    def waiting(self, pool: Any) -> None:
        for listener in self.listeners:
            _call(pool, listener.on_wait)

    def discarded(self, pool: Any, count: int, reason: str) -> None:
        for listener in self.listeners:
            for _ in range(count):
                _call(pool, listener.on_discard, reason)

    def enter_failed(self, pool: Any) -> None:
        """Called while a reservation's entry raises: tell of timeouts."""
        if isinstance(sys.exc_info()[1], PoolTimeout):
            for listener in self.listeners:
                _call(pool, listener.on_timeout)

    def after_fork(self, pool: Any) -> None:
        # The parent's times are not the child's, and a lock a parent's
        # thread held at the fork would never be released here: new ones.
        self._init_histograms()
        for listener in self.listeners:
            _call(pool, listener.on_fork_reset)

    def histograms(self, reset: bool = False) -> tuple[Histogram, ...]:
        """Snapshots of the wait, use and create histograms."""
        return (
            self.wait.snapshot(reset),
            self.use.snapshot(reset),
            self.create.snapshot(reset),
        )


class NoTelemetry:
    """Timings switched off and no listeners: records nothing, tells nobody."""

    active = False
    listeners: tuple[PoolListener, ...] = ()

    def start(self) -> float:
        return 0.0

    def created(self, pool: Any, started: float) -> None:
        pass

    def reserved(self, pool: Any, slot: _Taken, started: float) -> None:
        pass

    def released(self, slot: _Taken) -> float | None:
        return None

    def tell_released(self, pool: Any, used: float) -> None:
        pass

    def waiting(self, pool: Any) -> None:
        pass

    def discarded(self, pool: Any, count: int, reason: str) -> None:
        pass

    def enter_failed(self, pool: Any) -> None:
        pass

    def after_fork(self, pool: Any) -> None:
        pass

    def histograms(self, reset: bool = False) -> tuple[Histogram, ...]:
        return ()


def _call(pool: Any, method: Callable[..., None], *args: Any) -> None:
    try:
        method(pool, *args)
    except Exception:
        logger.warning(
            "%s: listener %r raised; the pool carries on",
            pool.name,
            method,
            exc_info=True,
        )


#: The metrics exporters a setting may name, and their modules; each module
#: has an ``instrument(pool)`` and an extra named after it.
EXPORTERS = {"otel": "mcpool.otel", "prometheus": "mcpool.prometheus"}


def export_metrics(
    pool: Any, exporters: str | Sequence[str] | None, setting: str = "exporters"
) -> list[Any]:
    """Instrument *pool* with the exporters a framework setting names.

    For integrations: the Flask extension passes ``MCPOOL_METRICS``.

    :param exporters: ``"otel"``, ``"prometheus"``, both as a list or a
        comma-separated string (from the environment), or ``None`` for none.
    :param setting: the setting's name, for the error message.
    :returns: what each ``instrument()`` returned.
    :raises ValueError: an exporter not in :data:`EXPORTERS`.
    :raises ImportError: an exporter whose extra is not installed; the
        message says what to install.

    >>> export_metrics(pool, "prometheus", "MCPOOL_METRICS")  # doctest: +SKIP

    .. versionadded:: 0.1
    """
    if exporters is None:
        return []
    problem = ValueError(
        f"{setting} must be one of {', '.join(map(repr, EXPORTERS))}, a list "
        f"of them or None, got {exporters!r}"
    )
    if isinstance(exporters, str):
        parts = exporters.split(",")  # from the environment: "otel,prometheus"
    elif isinstance(exporters, Sequence):
        parts = [str(part) for part in exporters]
    else:
        raise problem
    names = [part.strip().lower() for part in parts]
    names = [name for name in names if name and name != "none"]
    if any(name not in EXPORTERS for name in names):
        raise problem
    return [importlib.import_module(EXPORTERS[name]).instrument(pool) for name in names]
