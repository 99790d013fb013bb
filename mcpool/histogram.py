"""Fixed-bucket histograms of times, cheap to record and to export.

A pool with timings switched on keeps three: how long callers waited for an
item, how long they held it, and how long the factory took to make one.
:meth:`~mcpool.Pool.stats` returns snapshots (:class:`Histogram`), which
give percentiles and subtract, so that the numbers of a window are the
difference of two snapshots:

>>> before = pool.stats().wait_time  # doctest: +SKIP
>>> ...
>>> window = pool.stats().wait_time - before  # doctest: +SKIP
>>> window.quantile(0.99)  # doctest: +SKIP
0.0004
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from dataclasses import dataclass

__all__ = ["BUCKETS", "Histogram", "TimeHistogram"]

#: Upper bounds of the buckets, in seconds: from 10 µs (an idle client taken
#: from the pool) to 10 s (a caller that waited out a long timeout). The last
#: bucket, above 10 s, is unbounded.
BUCKETS: tuple[float, ...] = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(frozen=True)
class Histogram:
    """A snapshot of a time histogram.

    ``counts[i]`` is the number of times no longer than ``bounds[i]`` seconds
    and longer than ``bounds[i - 1]``; the last count is for times above the
    last bound. Snapshots subtract (``later - earlier``) to give a window.

    >>> h = Histogram((0.1, 1.0), (3, 1, 0), 0.5)
    >>> h.count
    4
    >>> h.quantile(0.5)
    0.06666666666666667

    .. versionadded:: 0.1
    """

    #: upper bounds of the buckets, in seconds
    bounds: tuple[float, ...]
    #: times per bucket; one more than *bounds*, the last above the last bound
    counts: tuple[int, ...]
    #: the sum of the times, in seconds
    sum: float

    @property
    def count(self) -> int:
        """How many times were recorded."""
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """The time below which a share *q* (0..1) of the times fall.

        Estimated by linear interpolation inside the bucket that holds it,
        as Prometheus's ``histogram_quantile()`` does; a quantile in the last,
        unbounded bucket is reported as the last bound. ``None`` when the
        histogram is empty.

        :raises ValueError: *q* outside 0..1.
        """
        if not 0 <= q <= 1:
            raise ValueError(f"q must be within 0..1, got {q}")
        total = self.count
        if not total:
            return None
        rank = q * total
        seen = 0
        for i, count in enumerate(self.counts):
            if count and seen + count >= rank:
                if i == len(self.bounds):
                    return self.bounds[-1]
                lower = self.bounds[i - 1] if i else 0.0
                return lower + (self.bounds[i] - lower) * (rank - seen) / count
            seen += count
        return self.bounds[-1]

    def __sub__(self, earlier: Histogram) -> Histogram:
        if earlier.bounds != self.bounds:
            raise ValueError("only histograms with the same bounds subtract")
        return Histogram(
            self.bounds,
            tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True)),
            self.sum - earlier.sum,
        )


class TimeHistogram:
    """A histogram that threads record into; :meth:`snapshot` reads it."""

    __slots__ = ("_lock", "_counts", "_sum")

    def __init__(self) -> None:
        # Recording is three bytecodes after a bisect, but whether another
        # thread can run between them depends on the interpreter's version
        # (and there may be no GIL): a lock keeps every count.
        self._lock = threading.Lock()
        self._counts = [0] * (len(BUCKETS) + 1)
        self._sum = 0.0

    def record(self, seconds: float) -> None:
        """Count one time, in seconds."""
        i = bisect_left(BUCKETS, seconds)
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds

    def snapshot(self, reset: bool = False) -> Histogram:
        """The counts so far; with *reset*, start again from zero."""
        with self._lock:
            snapshot = Histogram(BUCKETS, tuple(self._counts), self._sum)
            if reset:
                self._counts = [0] * (len(BUCKETS) + 1)
                self._sum = 0.0
        return snapshot
