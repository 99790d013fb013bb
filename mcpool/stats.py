"""The record a pool's :meth:`~mcpool.Pool.stats` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .servers import ServerState

from .histogram import Histogram

__all__ = ["PoolStats"]


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool's state and counters, taken under its lock.

    ``size == idle + in_use`` and ``size == created - discarded`` always hold
    in a snapshot. Times are in seconds.

    >>> pool.stats()  # doctest: +SKIP
    PoolStats(max_size=4, size=2, idle=1, in_use=1, waiting=0, created=2, ...)
    """

    #: the most items the pool holds at once
    max_size: int
    #: items alive now, idle or in use
    size: int
    #: items waiting in the pool
    idle: int
    #: items reserved by callers
    in_use: int
    #: callers waiting for an item
    waiting: int
    #: items made by the factory since the pool was created
    created: int
    #: items closed and dropped: broken, aged, idle too long, or after a fork
    discarded: int
    #: successful reservations
    reserves: int
    #: reservations that gave up with :class:`~mcpool.PoolTimeout`
    timeouts: int
    #: reservations that had to wait
    waits: int
    #: seconds spent waiting, summed over all reservations
    total_wait: float
    #: the longest single wait, in seconds
    max_wait: float
    #: items whose reservation was dropped unreleased (or cut off by an
    #: exception) and whose slot the pool freed; each is logged with the
    #: line that reserved it
    recovered: int = 0
    #: reservations refused at once with :class:`~mcpool.TooManyRequests`
    #: because *max_waiting* callers were already waiting
    rejected: int = 0
    #: each server's state and counters (:class:`mcpool.servers.ServerState`)
    #: for a :class:`~mcpool.ClientPool` of :class:`mcpool.Client`; empty
    #: for other pools
    servers: tuple[ServerState, ...] = ()
    #: the pool's name
    name: str = ""
    #: with timings on, seconds from entering ``reserve()`` to holding an
    #: item (waiting in line and making the item included); else ``None``
    wait_time: Histogram | None = None
    #: with timings on, seconds from reserving an item to giving it back
    use_time: Histogram | None = None
    #: with timings on, seconds the factory took to make each item
    create_time: Histogram | None = None

    @property
    def wait_p50(self) -> float | None:
        """The median wait for an item, in seconds; ``None`` without timings."""
        return self.wait_time.quantile(0.5) if self.wait_time else None

    @property
    def wait_p99(self) -> float | None:
        """The 99th percentile of waits, in seconds; ``None`` without timings."""
        return self.wait_time.quantile(0.99) if self.wait_time else None

    @property
    def use_p50(self) -> float | None:
        """The median time an item was held, in seconds."""
        return self.use_time.quantile(0.5) if self.use_time else None

    @property
    def use_p99(self) -> float | None:
        """The 99th percentile of the times an item was held, in seconds."""
        return self.use_time.quantile(0.99) if self.use_time else None
