"""The pool core: checkout, handoff to waiters, ageing, recovery.

:class:`Pool` serves any object that must not be used by two threads at
once (a memcached client, an ``ftplib.FTP`` connection, a DBAPI connection)
from a factory. :class:`~mcpool.ClientPool` is this core with a master
client's ``clone`` as the factory.

.. code-block:: python

    import ftplib
    from mcpool import Pool

    pool = Pool(lambda: ftplib.FTP("127.0.0.1", "user", "secret"), max_size=3,
                close=ftplib.FTP.close)
    with pool.reserve() as ftp:
        ftp.retrbinary("RETR report.csv", out.write)

One ``with pool.reserve() as item:`` reads top to bottom in
:meth:`Reservation.__enter__` (and :meth:`Pool._take` when no idle item is
at hand), then :meth:`Reservation.__exit__` (and :meth:`Pool._release`):
take an idle item, or make one, or wait in line; on the way out keep or
discard it; hand it to the oldest waiter or put it back.

Every item the pool counts is a *slot*: idle (in ``_idle``), or held by one
:class:`Reservation` (``slot.holder``). A slot that is neither, or whose
reservation nobody but the slot references any more, was lost by its
holder: dropped unreleased, or cut off by an exception that struck between
two bytecodes. :meth:`Pool._recover` finds such slots when the pool runs out
(and when :meth:`Pool.stats` is read) and frees their capacity, so a fault
anywhere costs at most the item it struck, never a slot for good.

Lock-free fast paths: the inlined reserve and release in
:class:`Reservation` take no lock. CPython switches threads, and runs signal
handlers and asynchronous exceptions, only at calls and backward jumps; the
inlined paths test, claim and move a slot with no call in between, so under
the GIL each is atomic, and a slot is never out of the deque without a
holder. Everything else mutates the deque with single atomic operations
(``pop``, ``popleft``, ``append``) and takes the lock, which is only ever
held in a ``with`` block.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from .errors import PoolClosed, PoolError, PoolTimeout, TooManyRequests
from .fork import abandon, new_fork_marker, reset_lock, watch_for_forks
from .leaks import LeakDetector, NoLeakDetector
from .lease import Lease
from .limits import wait_seconds, whole_number
from .recovery import holder_dropped, item_referenced_elsewhere, report_recovered
from .stats import PoolStats
from .telemetry import NoTelemetry, PoolListener, Telemetry

__all__ = ["Pool", "Reservation"]

T = TypeVar("T")

logger = logging.getLogger("mcpool")

_new = object.__new__

# The inlined reserve and release take no lock: they rely on the GIL running
# no other thread, signal handler or asynchronous exception between two
# bytecodes that call nothing. Without a GIL they stay off.
_GIL = not hasattr(sys, "_is_gil_enabled") or sys._is_gil_enabled()
_getframe = sys._getframe

# How long a waiter sleeps before it looks for slots lost by their holders:
# a reservation dropped while everyone waits is found within this time.
_RECOVERY_INTERVAL = 1.0

# A slot whose item the factory is still making.
_PENDING: Any = object()

# What a waiter is told when it is woken: "your reservation holds an item",
# "your reservation holds a free slot: make the item", "the pool was closed".
_SERVED = object()
_GRANT = object()
_CLOSED = object()


def _discard_always(exc: BaseException) -> bool:
    return True


class _Slot:
    """The pool's record of one item: idle, or held by one reservation."""

    __slots__ = (
        "item",
        "holder",
        "generation",
        "expires_at",
        "idle_since",
        "site",
        "reserved_at",
        "reserved_by",
        "reserved_stack",
        "taken_at",
    )

    def __init__(self, generation: int) -> None:
        self.item: Any = _PENDING
        # A strong reference, and the reservation refers back: a cycle that
        # release breaks. Reference counts tell a dropped reservation (only
        # the slot refers to it) from a held one, at no cost on the hot path;
        # a weak reference cost 0.1-0.2 us a reserve.
        self.holder: Reservation[Any] | None = None
        self.generation = generation
        self.expires_at = float("inf")
        self.idle_since = 0.0
        # (code, bytecode offset) of the reserving call, for the report
        # when the reservation is dropped unreleased.
        self.site: tuple[Any, int] | None = None
        self.reserved_at = 0.0
        self.reserved_by = ""
        self.reserved_stack: list[tuple[str, int, str]] | None = None
        # When the current holder got the item, while timings are on.
        self.taken_at: float | None = None


class _Waiter:
    """A caller in line. ``signal`` is held until the waiter is served."""

    __slots__ = ("signal", "result", "reservation", "gone")

    def __init__(self, reservation: Reservation[Any]) -> None:
        self.signal = threading.Lock()
        self.signal.acquire()
        self.result: object = None
        self.reservation = reservation
        # Set first thing when the waiter leaves by an exception: servers
        # skip it even if a second fault keeps it from leaving the line.
        self.gone = False


class Reservation(Generic[T]):
    """What :meth:`Pool.reserve` returns: one use of one pooled item.

    Entering takes an item (an idle one, a new one, or after waiting in
    line); leaving returns it, or discards it if the block raised an
    exception that the pool's *discard_on* calls fatal. Nothing is taken
    before ``__enter__``, so a reservation that is never entered costs
    nothing. A reservation serves one ``with`` block: leaving it again does
    nothing, and entering it again raises :class:`RuntimeError`.

    >>> with pool.reserve() as item:  # doctest: +SKIP
    ...     item.use()
    """

    __slots__ = ("_pool", "_slot", "_wait")

    _pool: Pool[T] | None
    _slot: _Slot | None
    # None: block, with the pool's timeout; else (block, seconds or None).
    _wait: tuple[bool, float | None] | None

    def __init__(self, pool: Pool[T], block: bool = True, timeout: Any = None) -> None:
        self._pool = pool
        self._slot = None
        self._wait = None
        if not (block is True and timeout is None):
            seconds = pool._timeout if timeout is None else wait_seconds(timeout)
            self._wait = (bool(block), seconds)

    @property
    def item(self) -> T:
        """The item, while the reservation holds it.

        :raises RuntimeError: before ``__enter__`` or after ``__exit__``.
        """
        slot = self._slot
        if slot is None:
            raise RuntimeError("this reservation holds no item; use it in a with block")
        item: T = slot.item
        return item

    def __enter__(self) -> T:
        pool = self._pool
        if pool is None or self._slot is not None:
            raise RuntimeError(
                "this reservation was already "
                + ("released" if pool is None else "entered")
                + "; each with block needs its own pool.reserve()"
            )
        try:
            if not pool._fork_marker[0]:
                pool._after_unhooked_fork()
            idle = pool._idle
            if self._wait is None and idle and not (pool._vetted or pool._waiters):
                # Pool._take's common case, inlined and lock-free (see
                # "Lock-free fast paths" in the module's docstring): the slot
                # is claimed before it leaves the deque, with no call between
                # the test and the pop.
                slot = idle[-1]
                slot.holder = self
                self._slot = slot
                slot.site = None  # not recorded here: 0.2 us a reserve
                pool._reserves += 1
                idle.pop()
                item: T = slot.item
                return item
            return pool._take(self)
        except BaseException:
            pool._enter_failed(self)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        slot = self._slot
        if slot is None:
            self._pool = None
            return
        pool = self._pool
        assert pool is not None
        if exc is None and pool._plain and not (pool._waiters or pool._closed):
            # Pool._release's common case, inlined and lock-free: no call
            # from the test of self._slot to the append.
            self._slot = None
            self._pool = None
            slot.holder = None
            pool._idle.append(slot)
            if pool._waiters or pool._closed:
                pool._settle()  # a waiter queued, or close() ran, meanwhile
            return
        pool._release(self, exc, discard=False)


class Pool(Generic[T]):
    """A bounded, fair, fork-safe pool of items made by *factory*.

    Items are made lazily, up to *max_size*. A caller that finds none idle and
    the pool full waits in line; a returning item goes straight to the oldest
    waiter. The most recently returned idle item is reused first, so a lightly
    loaded pool keeps few items warm and lets the rest age out.

    No exception, wherever it is raised (in the caller, in a waiter, in a
    hook, asynchronously), and no reservation dropped unreleased loses an
    item's slot for good: the pool notices and frees it, with a warning
    naming where the item was reserved.

    :param factory: makes a new item; called outside the pool's lock.
    :param max_size: the most items alive at once.
    :param min_idle: keep at least this many items idle; they are made at
        construction and replaced when discarded.
    :param timeout: default seconds :meth:`reserve` waits before raising
        :class:`~mcpool.PoolTimeout`; ``math.inf`` waits forever.
    :param max_waiting: the most callers waiting in line at once; one more
        raises :class:`~mcpool.TooManyRequests` at once instead of waiting.
        ``None`` (the default) lets any number wait; ``0`` lets nobody wait.
    :param max_idle: close idle items above *min_idle* after this many
        seconds unused (checked when items come back, and by :meth:`prune`).
    :param max_spare: keep at most this many items idle; when one more comes
        back, the least recently used idle item is closed. ``None`` keeps
        every item that comes back.
    :param max_lifetime: replace an item this many seconds after it was made,
        less up to *lifetime_jitter* of it at random, so that items made
        together do not all expire together. An item in use is replaced when
        it comes back.
    :param check: called with an idle item before it is handed out (never
        with one just made); a false result or an exception discards it and
        another is taken, within the reserve's timeout.
    :param keepalive: run *check* only on items idle at least this many
        seconds (a connection that sat unused long enough for a firewall to
        cut it); ``None`` runs it on every idle item. Needs *check*. No
        thread runs in the background: items are checked as they are taken.
    :param reset: called with an item when it comes back (a rollback, say);
        an exception discards the item.
    :param close: called with an item the pool drops; exceptions are logged.
    :param discard_on: decides, from the exception that left a
        ``with pool.reserve()`` block, whether the item is broken. By default
        every exception discards the item.
    :param leak_timeout: log items held longer than this, with the stack of
        the reservation, and name the longest holders in timeout errors.
    :param clock: the monotonic clock for ageing, leaks and timings,
        injectable in tests.
    :param name: shown in logs and errors, and the ``pool.name`` of exported
        metrics. By default the factory's name (``Pool``'s) or the servers
        (:class:`~mcpool.ClientPool`'s), the same in every process.
    :param timings: time every wait, use and item creation into histograms
        (see :meth:`stats`). The reserve and release then take the pool's
        lock; see :doc:`/telemetry` for what that costs. Adding a listener
        (:meth:`add_listener`) switches timings on too.
    :raises TypeError: a size that is not an ``int``, a timeout that is not a
        number.
    :raises ValueError: a size or timeout out of range.

    A hook (*check*, *reset*, *discard_on*, *close*) that raises gets the
    item discarded and counted; an :class:`Exception` is logged, and any
    other :class:`BaseException` (``KeyboardInterrupt``) propagates once the
    pool's books are straight.

    >>> pool = Pool(list, max_size=2)
    >>> with pool.reserve() as item:
    ...     item.append(1)
    >>> pool.stats().created
    1
    """

    def __init__(
        self,
        factory: Callable[[], T],
        max_size: int = 10,
        *,
        min_idle: int = 0,
        timeout: float = 30.0,
        max_waiting: int | None = None,
        max_idle: float | None = None,
        max_spare: int | None = None,
        max_lifetime: float | None = None,
        lifetime_jitter: float = 0.1,
        check: Callable[[T], object] | None = None,
        keepalive: float | None = None,
        reset: Callable[[T], object] | None = None,
        close: Callable[[T], object] | None = None,
        discard_on: Callable[[BaseException], bool] | None = None,
        leak_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
        timings: bool = False,
    ) -> None:
        whole_number(max_size, "max_size")
        whole_number(min_idle, "min_idle")
        if max_spare is not None:
            whole_number(max_spare, "max_spare")
        if min_idle > max_size:
            raise ValueError(f"min_idle must be within 0..max_size, got {min_idle}")
        if max_spare is not None and max_spare < min_idle:
            raise ValueError(
                f"max_spare must be >= min_idle ({min_idle}), got {max_spare}"
            )
        for seconds, what in (
            (max_idle, "max_idle"),
            (max_lifetime, "max_lifetime"),
            (leak_timeout, "leak_timeout"),
        ):
            if seconds is not None:
                wait_seconds(seconds, what)
        if not 0 <= lifetime_jitter < 1:
            raise ValueError(
                f"lifetime_jitter must be in [0, 1), got {lifetime_jitter}"
            )
        self.timeout = timeout
        self.max_waiting = max_waiting
        self.factory = factory
        self.max_size = max_size
        self.min_idle = min_idle
        self.max_idle = max_idle
        self.max_spare = max_spare
        self.max_lifetime = max_lifetime
        self.lifetime_jitter = lifetime_jitter
        if keepalive is not None:
            wait_seconds(keepalive, "keepalive")
            if check is None:
                raise ValueError(
                    "keepalive needs a check hook: pass check=, a function that "
                    "makes a cheap round trip on an item and returns False or "
                    "raises when the item is broken"
                )
        self.keepalive = keepalive
        self._check = check
        self._reset = reset
        self.close_item = close
        self.discard_on: Callable[[BaseException], bool] = discard_on or _discard_always
        self.leak_timeout = leak_timeout
        self.clock = clock
        self.name = name or self._default_name()
        self._leaks: LeakDetector | NoLeakDetector = NoLeakDetector()
        if leak_timeout is not None:
            self._leaks = LeakDetector(self.name, leak_timeout, clock)
        self._telemetry: Telemetry | NoTelemetry = NoTelemetry()
        if timings:
            self._telemetry = Telemetry(clock)
        self._aged = max_idle is not None or max_lifetime is not None
        self._generation = 0
        self._recovered = 0
        self._rejected = 0
        self._init_state()
        self._update_vetting()
        watch_for_forks(self)
        self._replenish()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._generation += 1
        self._slots: set[_Slot] = set()
        self._idle: deque[_Slot] = deque()
        self._waiters: deque[_Waiter] = deque()
        # Set when a slot may have lost its holder (a reservation dropped or
        # cut off by an exception); the next slow path recovers it.
        self._suspect = False
        self._closed = False
        self._created = 0
        self._discarded = 0
        self._reserves = 0
        self._timeouts = 0
        self._waits = 0
        self._total_wait = 0.0
        self._max_wait = 0.0
        # Items in use that resize() or drain() wants gone when they come
        # back; _replacing also covers a pool above its max_size.
        self._retiring: set[_Slot] = set()
        self._replacing = False
        # Last: in a child forked without at-fork hooks, a thread that reads
        # the new marker skips the reset, so everything it reads next must
        # already be the child's own.
        self._fork_marker = new_fork_marker()

    @property
    def timeout(self) -> float:
        """Default seconds :meth:`reserve` waits; ``math.inf`` waits forever."""
        return self._timeout_setting

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._timeout = wait_seconds(seconds)
        self._timeout_setting = seconds

    @property
    def max_waiting(self) -> int | None:
        """The most callers waiting in line at once; ``None`` for no bound.

        Setting it takes effect for the next caller that would wait; callers
        already in line stay there.
        """
        return self._max_waiting

    @max_waiting.setter
    def max_waiting(self, count: int | None) -> None:
        if count is not None:
            whole_number(count, "max_waiting")
        self._max_waiting = count

    @property
    def check(self) -> Callable[[T], object] | None:
        """The hook called with each idle item before it is handed out."""
        return self._check

    @check.setter
    def check(self, hook: Callable[[T], object] | None) -> None:
        self._check = hook
        self._update_vetting()

    @property
    def reset(self) -> Callable[[T], object] | None:
        """The hook called with each returning item, or ``None``."""
        return self._reset

    @reset.setter
    def reset(self, hook: Callable[[T], object] | None) -> None:
        self._reset = hook
        self._update_vetting()

    def _update_vetting(self) -> None:
        # One flag guards every optional feature, so that a pool with none of
        # them switched on pays a single attribute test per reserve/release.
        self._vetted = (
            self._generation > 1
            or self._aged
            or self._check is not None
            or self._reset is not None
            or self.leak_timeout is not None
            or self._telemetry.active
            or not _GIL
        )
        # While items are being replaced every return takes the slow path,
        # which decides under the lock whether the item goes.
        self._plain = (
            not self._vetted and self._max_spare is None and not self._replacing
        )

    @property
    def max_spare(self) -> int | None:
        """Keep at most this many items idle; ``None`` keeps all."""
        return self._max_spare

    @max_spare.setter
    def max_spare(self, count: int | None) -> None:
        if count is not None:
            whole_number(count, "max_spare")
        self._max_spare = count
        if hasattr(self, "_vetted"):
            self._update_vetting()

    # -- public API -------------------------------------------------------

    def reserve(
        self, block: bool = True, timeout: float | None = None
    ) -> Reservation[T]:
        """A reservation for one ``with`` block; the item is taken on entry.

        :param block: wait for an item when none is free. ``False`` raises
            :class:`~mcpool.PoolTimeout` at once, as ``pylibmc``'s pool raises
            ``queue.Empty``.
        :param timeout: seconds to wait; ``None`` for the pool's *timeout*,
            ``math.inf`` to wait forever.
        :raises TypeError: *timeout* is not a number (at this call).
        :raises ValueError: *timeout* is negative or ``nan`` (at this call).

        Entering the reservation raises :class:`~mcpool.PoolTimeout` when no
        item came within *timeout*, and :class:`~mcpool.PoolClosed` once the
        pool is closed.

        >>> with pool.reserve(timeout=0.5) as item:  # doctest: +SKIP
        ...     item.use()
        """
        if block is True and timeout is None:
            # The constructor, inlined: a Python-level __init__ is a fifth
            # of a whole reserve and release.
            reservation: Reservation[T] = _new(Reservation)
            reservation._pool = self
            reservation._slot = None
            reservation._wait = None
            return reservation
        return Reservation(self, block, timeout)

    def checkout(self, block: bool = True, timeout: float | None = None) -> Lease[T]:
        """Reserve an item now and return a :class:`Lease` to release by hand.

        For code that cannot use a ``with`` block, such as WSGI middleware that
        holds a client until the server closes the response. A lease dropped
        unreleased is noticed: its item's slot is freed, with a warning.

        >>> lease = pool.checkout()  # doctest: +SKIP
        >>> try:
        ...     lease.item.set("k", "v")
        ... finally:
        ...     lease.release()
        """
        reservation = self.reserve(block, timeout)
        reservation.__enter__()
        slot = reservation._slot
        if slot is not None:  # the caller's line, not this one
            caller = _getframe(1)
            slot.site = (caller.f_code, caller.f_lasti)
        return Lease(reservation)

    def stats(self) -> PoolStats:
        """A consistent snapshot of sizes and counters; see :class:`PoolStats`.

        With timings on, it holds the wait, use and create histograms too
        (``stats().wait_p99``).
        """
        return self._snapshot(reset=False)

    def pop_stats(self) -> PoolStats:
        """:meth:`stats`, then start the timing histograms again from zero.

        For a reporter that wants the times since its last report; the
        counters are not reset.

        >>> pool.pop_stats().wait_p99  # doctest: +SKIP
        0.00012

        .. versionadded:: 0.1
        """
        return self._snapshot(reset=True)

    def usage(self) -> tuple[int, int, int]:
        """``(idle, in_use, waiting)`` now: a cheaper :meth:`stats` for
        exporters that read it on every event.

        Unlike :meth:`stats`, it does not look for lost items first, so
        ``in_use`` counts an item whose reservation was dropped unreleased
        until the pool notices.

        >>> pool.usage()  # doctest: +SKIP
        (3, 1, 0)

        .. versionadded:: 0.1
        """
        with self._lock:
            idle = len(self._idle)
            return idle, len(self._slots) - idle, len(self._waiters)

    def add_listener(self, listener: PoolListener) -> None:
        """Tell *listener* of this pool's events; see :class:`PoolListener`.

        Switches timings on: from now on every reserve and release takes the
        pool's lock.

        >>> pool.add_listener(PoolListener())  # doctest: +SKIP

        .. versionadded:: 0.1
        """
        with self._lock:
            telemetry = self._telemetry
            if not isinstance(telemetry, Telemetry):
                telemetry = Telemetry(self.clock)
            # A new tuple, never changed in place: a thread calling the
            # listeners keeps the one it started with.
            telemetry.listeners = (*telemetry.listeners, listener)
            self._telemetry = telemetry
            self._update_vetting()

    def remove_listener(self, listener: PoolListener) -> None:
        """Stop telling *listener* of events; timings stay on.

        :raises ValueError: *listener* was not added.

        .. versionadded:: 0.1
        """
        with self._lock:
            listeners = list(self._telemetry.listeners)
            listeners.remove(listener)
            self._telemetry.listeners = tuple(listeners)

    def _default_name(self) -> str:
        """The name when none is given: stable across processes and restarts."""
        factory = getattr(self.factory, "__qualname__", "")
        if not factory or "<" in factory:  # a lambda, or a local function
            return type(self).__name__
        return f"{type(self).__name__}({factory})"

    def _snapshot(self, reset: bool) -> PoolStats:
        self._check_fork()
        self._recover()  # so that in_use counts only items somebody holds
        with self._lock:
            idle = len(self._idle)
            size = len(self._slots)
            histograms = self._telemetry.histograms(reset)
            return PoolStats(
                max_size=self.max_size,
                size=size,
                idle=idle,
                in_use=size - idle,
                waiting=len(self._waiters),
                created=self._created,
                discarded=self._discarded,
                reserves=self._reserves,
                timeouts=self._timeouts,
                waits=self._waits,
                total_wait=self._total_wait,
                max_wait=self._max_wait,
                recovered=self._recovered,
                rejected=self._rejected,
                name=self.name,
                wait_time=histograms[0] if histograms else None,
                use_time=histograms[1] if histograms else None,
                create_time=histograms[2] if histograms else None,
            )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Close the pool.

        Idle items are closed now, waiters are woken with
        :class:`~mcpool.PoolClosed`, and items in use are closed when they come
        back. Reserving afterwards raises :class:`~mcpool.PoolClosed`. Calling
        it again does nothing.
        """
        self._check_fork()
        with self._lock:
            self._closed = True
            dropped = self._drain_idle()
            while self._waiters:
                waiter = self._waiters.popleft()
                waiter.result = _CLOSED
                waiter.signal.release()
        self._close_items(dropped)

    def prune(self) -> int:
        """Close idle items past *max_idle* or *max_lifetime* now.

        The pool does this by itself when items come back; call it from a
        timer if the pool may sit unused for long. Returns how many items were
        closed.
        """
        self._check_fork()
        now = self.clock()
        with self._lock:
            dropped = self._pop_expired_idle(now)
        self._close_items(dropped, "aged")
        self._replenish()
        return len(dropped)

    def resize(self, max_size: int) -> None:
        """Change the most items alive at once, while the pool runs.

        Growing lets callers in line make items at once. Shrinking closes
        idle items now, least recently used first, and items in use as they
        come back, until the pool is within *max_size*; meanwhile no new item
        is made and returning items serve no waiter. No caller fails because
        of it: those in line keep waiting, within their timeouts.

        :raises TypeError: *max_size* is not an ``int``.
        :raises ValueError: *max_size* is below 1 or below *min_idle*.

        >>> pool.resize(20)  # doctest: +SKIP

        .. versionadded:: 0.1
        """
        whole_number(max_size, "max_size")
        if max_size < max(1, self.min_idle):
            raise ValueError(
                f"max_size must be >= 1 and >= min_idle ({self.min_idle}), got "
                f"{max_size}; lower min_idle first to shrink below it"
            )
        self._check_fork()
        with self._lock:
            self._replacing = True  # as in drain()
            self._update_vetting()
            self.max_size = max_size
            dropped = []
            while len(self._slots) > max_size and self._idle:
                slot = self._idle.popleft()  # one at a time: see _settle
                self._slots.discard(slot)
                self._discarded += 1
                dropped.append(slot)
            self._grant_free_slots()
            self._serve_from_idle()
            self._note_replacing()
        self._close_items(dropped, "replaced")

    def drain(self) -> None:
        """Replace every item: idle ones now, those in use as they come back.

        New items come from the factory as callers need them. For a change
        that existing items do not pick up: new servers or credentials behind
        the factory, a rotated password. No caller fails because of it:
        an item in use stays with its holder until the block ends.

        >>> pool.drain()  # doctest: +SKIP

        .. versionadded:: 0.1
        """
        self._check_fork()
        with self._lock:
            # The slow return path first: a lock-free return that passed its
            # test before this line has put its item in _idle already.
            self._replacing = True
            self._update_vetting()
            dropped = self._drain_idle()
            # Those in use, and those still being made (perhaps from the old
            # settings).
            self._retiring.update(self._slots)
            self._grant_free_slots()
            self._note_replacing()
        self._close_items(dropped, "replaced")
        self._replenish()

    def _note_replacing(self, leaving: int = 0) -> None:
        """Turn the slow return path on or off for resize/drain; lock held.

        *leaving*: slots about to be discarded by the caller.
        """
        self._retiring.intersection_update(self._slots)  # lost ones are gone
        replacing = bool(self._retiring) or len(self._slots) - leaving > self.max_size
        if replacing != self._replacing:
            self._replacing = replacing
            self._update_vetting()

    def _retire(self, slot: _Slot) -> bool:
        """Whether a returning item goes, because of resize/drain; lock held.

        The caller (:meth:`_give_back`) discards it and counts it.
        """
        if slot in self._retiring:
            self._retiring.discard(slot)
            retire = True
        else:
            retire = len(self._slots) > self.max_size
        self._note_replacing(leaving=retire)
        return retire

    def __enter__(self) -> Pool[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<{type(self).__name__} {self.name!r} size={s.size}/{s.max_size} "
            f"idle={s.idle} in_use={s.in_use} waiting={s.waiting}>"
        )

    # -- the reserve/release path -----------------------------------------

    def _take(self, reservation: Reservation[T]) -> T:
        """Take an idle item, or make one, or wait in line; then vet it."""
        block, seconds = reservation._wait or (True, self._timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        started = self._telemetry.start()
        if self._suspect:
            self._recover()
        while True:
            waiter = None
            lost: list[_Slot] = []
            refusal: PoolError | None = None
            fresh = False
            # Refusals are raised once the lock is released: on Python 3.10
            # a signal handler that raises while an exception leaves a with
            # block skips the block's __exit__, and the lock stays held.
            with self._lock:
                limit = self._max_waiting
                if self._closed:
                    refusal = PoolClosed(
                        f"{self.name} is closed; nothing can be reserved from it"
                    )
                elif self._idle and not self._waiters:
                    self._hold(self._idle.pop(), reservation)
                elif len(self._slots) < self.max_size and not self._waiters:
                    self._hold(self._new_slot(), reservation)
                    fresh = True
                elif not self._waiters and (lost := self._find_lost()):
                    # The pool ran out: the first in line makes sure that no
                    # holder lost its item (a scan of max_size slots); those
                    # behind it rely on the waiters' scans every second,
                    # which keeps the scan off the lock under contention.
                    pass
                elif not block or (
                    deadline is not None and time.monotonic() >= deadline
                ):
                    self._timeouts += 1
                    refusal = PoolTimeout(self._timeout_message(seconds or 0.0, block))
                elif limit is not None and len(self._waiters) >= limit:
                    self._rejected += 1
                    refusal = TooManyRequests(self._overload_message(limit))
                else:
                    waiter = _Waiter(reservation)
                    self._waiters.append(waiter)
                    # A lock-free return may have come between the test of
                    # _idle above and this line.
                    self._serve_from_idle()
            if refusal is not None:
                raise refusal
            if lost:
                self._report_lost(lost)
                continue  # their capacity is free again
            if waiter is not None:
                fresh = self._wait_in_line(waiter, deadline, seconds or 0.0)
            slot = reservation._slot
            assert slot is not None
            if fresh:
                self._make(slot)
            elif self._vetted:
                try:
                    usable = self._usable(slot)
                except BaseException:
                    self._release(reservation, None, discard=True)
                    reservation._pool = self
                    raise
                if not usable:
                    aged = self._aged and self.clock() >= slot.expires_at
                    reason = "aged" if aged else "check"
                    self._release(reservation, None, discard=True, reason=reason)
                    reservation._pool = self  # the reservation tries again
                    continue
            if self._vetted:
                self._leaks.on_take(slot)
                if self._aged:
                    self.prune()
            with self._lock:
                self._reserves += 1
            self._telemetry.reserved(self, slot, started)
            caller = _getframe(2)
            slot.site = (caller.f_code, caller.f_lasti)
            item: T = slot.item
            return item

    def _hold(self, slot: _Slot, reservation: Reservation[T]) -> None:
        """Make *reservation* the holder of *slot*; called with the lock held."""
        slot.holder = reservation
        reservation._slot = slot

    def _new_slot(self) -> _Slot:
        """Count a slot for an item about to be made; called with the lock held."""
        slot = _Slot(self._generation)
        self._slots.add(slot)
        return slot

    def _wait_in_line(
        self, waiter: _Waiter, deadline: float | None, seconds: float
    ) -> bool:
        """Wait until served; True if the slot came empty (make the item)."""
        started = time.monotonic()
        try:
            self._telemetry.waiting(self)
            while True:
                # In slices: a holder may drop its reservation while everyone
                # waits, and then nobody else would look for the lost slot.
                pause = _RECOVERY_INTERVAL
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                if waiter.signal.acquire(True, pause):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._recover()
        except BaseException:
            # A signal handler raised, or an asynchronous exception arrived,
            # maybe just after an item was handed over: leave the line and
            # give back whatever this waiter was given.
            waiter.gone = True
            self._suspect = True
            self._leave_line(waiter)
            raise
        waited = time.monotonic() - started
        refusal: PoolError | None = None
        with self._lock:  # refusals are raised outside: see _take
            self._waits += 1
            self._total_wait += waited
            self._max_wait = max(self._max_wait, waited)
            result = waiter.result
            if result is None:
                # Not served in time. One served between its deadline and
                # this lock keeps what it was given.
                self._waiters.remove(waiter)
                self._timeouts += 1
                refusal = PoolTimeout(self._timeout_message(waited, True))
            elif result is _CLOSED:
                refusal = PoolClosed(
                    f"{self.name} was closed while waiting for an item"
                )
        if refusal is not None:
            raise refusal
        return result is _GRANT

    def _leave_line(self, waiter: _Waiter) -> None:
        """A waiter left by an exception: out of line. What it was handed
        meanwhile goes back in :meth:`_enter_failed`, on the way out."""
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass  # served, or woken by close()

    def _make(self, slot: _Slot) -> None:
        """Make the item of a slot counted but still empty."""
        started = self._telemetry.start()
        try:
            item = self.factory()
        except BaseException:
            with self._lock:
                holder = slot.holder
                if holder is not None and holder._slot is slot:
                    holder._slot = None
                slot.holder = None
                self._slots.discard(slot)
                self._grant_free_slots()
            raise
        if self.max_lifetime is not None:
            jitter = 1.0 - self.lifetime_jitter * random.random()
            slot.expires_at = self.clock() + self.max_lifetime * jitter
        slot.item = item
        with self._lock:
            self._created += 1
        self._telemetry.created(self, started)

    def _release(
        self,
        reservation: Reservation[T],
        exc: BaseException | None,
        discard: bool,
        reason: str = "broken",
    ) -> None:
        """Decide keep or discard, then hand the item on; once per reservation."""
        slot = reservation._slot
        if slot is None:
            reservation._pool = None
            return
        raised: BaseException | None = None
        used: float | None = None
        try:
            if not discard and exc is not None:
                discard = self.discard_on(exc)
            if self._vetted and slot.generation == self._generation:
                self._leaks.on_give(slot)
                if not discard and self._reset is not None:
                    if not self._run_hook(self._reset, slot, "reset"):
                        discard, reason = True, "reset"
                if self._aged or self.keepalive is not None:
                    now = slot.idle_since = self.clock()
                    if not discard and now >= slot.expires_at:
                        discard, reason = True, "aged"
                used = self._telemetry.released(slot)
        except BaseException as hook_exc:
            discard = True
            if isinstance(hook_exc, Exception):
                logger.warning(
                    "%s: discard_on raised; the item is discarded",
                    self.name,
                    exc_info=True,
                )
            else:
                raised = hook_exc
        try:
            self._give_back(reservation, slot, discard, reason)
            if used is not None:  # told once the pool's books show it back
                self._telemetry.tell_released(self, used)
        finally:
            if raised is not None:
                raise raised

    def _give_back(
        self,
        reservation: Reservation[T],
        slot: _Slot,
        discard: bool,
        reason: str = "broken",
    ) -> None:
        """Detach *slot* from *reservation*, then keep, hand on or close it."""
        if not self._fork_marker[0]:
            # A child forked without at-fork hooks, before its first reserve:
            # the idle items, the waiters and this item are all the parent's.
            self._after_unhooked_fork()
        surplus: list[_Slot] = []
        with self._lock:
            if reservation._slot is not slot:
                return  # released meanwhile by another thread
            reservation._slot = None
            reservation._pool = None
            slot.holder = None
            if slot.generation != self._generation:
                # Made before a fork that happened while it was out: the
                # parent owns it. Never use it, never free it.
                abandon(slot.item)
                return
            if self._replacing and self._retire(slot):
                if not discard:
                    reason = "replaced"
                discard = True
            if discard or self._closed:
                self._slots.discard(slot)
                self._discarded += 1
                self._grant_free_slots()
                surplus.append(slot)
                reason = reason if discard else "closed"
            else:
                self._hand_over(slot)
                spare = self.max_spare
                if spare is not None and len(self._idle) > spare:
                    # Close the least recently used.
                    extra = self._idle.popleft()
                    self._slots.discard(extra)
                    self._discarded += 1
                    surplus.append(extra)
                    reason = "spare"
        if surplus:
            self._close_items(surplus, reason)
            if self.min_idle:
                self._replenish()

    def _hand_over(self, slot: _Slot) -> None:
        """Give *slot* to the oldest waiter, or keep it idle; lock held."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.gone:
                continue
            self._hold(slot, waiter.reservation)
            waiter.result = _SERVED
            waiter.signal.release()
            return
        self._idle.append(slot)

    def _grant_free_slots(self) -> None:
        """Let waiters make items in free slots; called with the lock held."""
        while self._waiters and len(self._slots) < self.max_size and not self._closed:
            waiter = self._waiters.popleft()
            if waiter.gone:
                continue
            self._hold(self._new_slot(), waiter.reservation)
            waiter.result = _GRANT
            waiter.signal.release()

    def _serve_from_idle(self) -> None:
        """Hand idle items to waiters; called with the lock held.

        Lock-free reserves take nothing while anyone waits, so the pop
        comes first and always finds the item.
        """
        while self._idle and self._waiters:
            slot = self._idle.pop()
            self._hand_over(slot)

    def _drain_idle(self) -> list[_Slot]:
        """Take every idle item out of the pool; called with the lock held."""
        dropped = []
        while True:
            try:
                slot = self._idle.popleft()  # one at a time: see _settle
            except IndexError:
                break
            self._slots.discard(slot)
            self._discarded += 1
            dropped.append(slot)
        return dropped

    def _settle(self) -> None:
        """After a lock-free return that raced a waiter or :meth:`close`."""
        with self._lock:
            dropped = self._drain_idle() if self._closed else []
            self._serve_from_idle()
        self._close_items(dropped, "closed")

    # -- faults -------------------------------------------------------------

    def _enter_failed(self, reservation: Reservation[T]) -> None:
        """``__enter__`` raised: give back anything the reservation got.

        The reservation stays unentered, so the caller may try it again.
        """
        self._suspect = True
        slot = reservation._slot
        if slot is None:
            self._telemetry.enter_failed(self)  # a timeout, maybe: no item to return
            return
        with self._lock:
            if reservation._slot is not slot:
                return
            reservation._slot = None
            slot.holder = None
            slot.taken_at = None
            if slot.item is _PENDING:
                self._slots.discard(slot)
                self._grant_free_slots()
            else:
                self._hand_over(slot)

    def _recover(self) -> None:
        """Free the slots lost by their holders, and report them."""
        with self._lock:
            lost = self._find_lost()
        self._report_lost(lost)

    def _find_lost(self) -> list[_Slot]:
        """Free the slots that are neither idle nor held; lock held.

        Returns the lost items, for :meth:`_report_lost` outside the lock.
        """
        self._suspect = False
        lost = []
        for slot in list(self._slots):
            if slot.holder is None:
                if slot in self._idle:
                    continue
            elif not holder_dropped(slot):  # (no local may refer to the holder)
                continue
            else:  # only the slot refers to it, so nobody can change it
                holder = slot.holder
                holder._slot = holder._pool = None
                slot.holder = None
            self._slots.discard(slot)
            if slot.item is not _PENDING:
                self._discarded += 1
                self._recovered += 1
                lost.append(slot)
        if any(waiter.gone for waiter in self._waiters):
            self._waiters = deque(w for w in self._waiters if not w.gone)
        self._grant_free_slots()
        self._serve_from_idle()
        return lost

    def _report_lost(self, lost: list[_Slot]) -> None:
        """Warn of each lost item; close those nobody else refers to."""
        if not lost:
            return
        still_used = []
        for slot in lost:
            self._leaks.on_give(slot)
            # Somebody still has the item: closing it under them would break
            # their request, so the pool only forgets it.
            if item_referenced_elsewhere(slot):
                still_used.append(slot)
        self._close_items([slot for slot in lost if slot not in still_used], "lost")
        self._telemetry.discarded(self, len(still_used), "lost")
        for slot in lost:
            report_recovered(
                self.name, slot.site, slot.reserved_stack, slot in still_used
            )

    # -- the optional checks ----------------------------------------------

    def _usable(self, slot: _Slot) -> bool:
        if self._aged and self.clock() >= slot.expires_at:
            return False
        if self._check is not None:
            keepalive = self.keepalive
            if keepalive is not None and self.clock() - slot.idle_since < keepalive:
                return True  # used recently enough: no round trip
            return self._run_hook(self._check, slot, "check")
        return True

    def _run_hook(self, hook: Callable[[T], object], slot: _Slot, what: str) -> bool:
        """Run a hook on an item; False means discard it.

        An :class:`Exception` is logged; any other exception propagates, and
        the caller discards the item on its way out.
        """
        try:
            result = hook(slot.item)
        except Exception:
            logger.warning(
                "%s: %s hook raised; the item is discarded",
                self.name,
                what,
                exc_info=True,
            )
            return False
        return what != "check" or bool(result)

    def _pop_expired_idle(self, now: float) -> list[_Slot]:
        """Pop idle items past their age; called with the lock held.

        The least recently used items sit at the left of the deque.
        """
        idle = self._idle
        keep = self.min_idle
        max_idle = self.max_idle
        dropped: list[_Slot] = []
        for slot in list(idle):
            if len(idle) <= keep:
                break
            too_idle = max_idle is not None and now - slot.idle_since >= max_idle
            if too_idle or now >= slot.expires_at:
                idle.remove(slot)
                dropped.append(slot)
            elif max_idle is not None and self.max_lifetime is None:
                break  # idle times only grow leftwards: the rest are younger
        self._slots.difference_update(dropped)
        self._discarded += len(dropped)
        if dropped:
            self._grant_free_slots()
        return dropped

    def _replenish(self) -> None:
        """Make items until *min_idle* are idle (or the pool is full)."""
        while self.min_idle:
            with self._lock:
                if (
                    self._closed
                    or self._waiters
                    or len(self._idle) >= self.min_idle
                    or len(self._slots) >= self.max_size
                ):
                    return
                holder: Reservation[T] = Reservation(self)
                slot = self._new_slot()
                self._hold(slot, holder)
            self._make(slot)
            slot.idle_since = self.clock()
            self._give_back(holder, slot, discard=False)

    def _close_items(self, slots: list[_Slot], reason: str = "closed") -> None:
        """Tell listeners of dropped items, then run the close hook on them,
        outside the lock.

        Every item is closed even if one close raises; a
        :class:`BaseException` propagates after the last.
        """
        if slots:
            self._telemetry.discarded(self, len(slots), reason)
        close = self.close_item
        if close is None:
            return
        raised: BaseException | None = None
        for slot in slots:
            try:
                close(slot.item)
            except Exception:
                logger.warning("%s: close hook raised", self.name, exc_info=True)
            except BaseException as exc:
                raised = exc
        if raised is not None:
            raise raised

    # -- forks ---------------------------------------------------------------

    def _check_fork(self) -> None:
        """Reset the pool if this is a child forked without at-fork hooks."""
        if not self._fork_marker[0]:
            self._after_unhooked_fork()

    def _after_fork(self) -> None:
        """In a forked child: forget, without closing, every item the parent made."""
        for slot in self._slots:
            if slot.item is not _PENDING:
                abandon(slot.item)
        closed = self._closed
        self._on_fork()
        self._init_state()
        self._closed = closed
        self._telemetry.after_fork(self)
        # No replenishing here: this may run inside os.fork()'s at-fork hook,
        # where a factory that connects somewhere has no business running.
        self._update_vetting()

    def _after_unhooked_fork(self) -> None:
        """Reset once in a child whose fork ran no at-fork hooks."""
        with reset_lock():
            if not self._fork_marker[0]:
                self._after_fork()

    def _on_fork(self) -> None:
        """Subclass hook, run in a forked child before the state is reset."""

    def _overload_message(self, limit: int) -> str:
        idle = len(self._idle)
        size = len(self._slots)
        return (
            f"{self.name}: {len(self._waiters)} callers already waiting, "
            f"max_waiting={limit} (size={size}, max_size={self.max_size}, "
            f"in_use={size - idle}, idle={idle}); the pool is overloaded: answer "
            "'busy' and let the client retry later, raise max_size if the "
            "servers can take more connections, hold items for less time, or "
            "raise max_waiting to let more callers queue"
        )

    def _timeout_message(self, waited: float, block: bool) -> str:
        idle = len(self._idle)
        size = len(self._slots)
        state = (
            f"size={size}, max_size={self.max_size}, "
            f"in_use={size - idle}, idle={idle}, waiting={len(self._waiters)}"
        )
        holders = self._leaks.holders()
        if not block:
            return (
                f"{self.name}: no item free and block=False ({state}){holders}; "
                "reserve with block=True to wait, or raise max_size"
            )
        return (
            f"{self.name}: couldn't reserve an item after {waited:.2f} s ({state})"
            f"{holders}; raise max_size, hold items for less time, or pass a "
            "longer timeout"
        )
