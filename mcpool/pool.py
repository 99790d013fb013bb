"""The pool core: checkout, handoff to waiters, ageing, fork handling.

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
:meth:`Pool.reserve` and :meth:`Pool._give`: take an idle item, or make one,
or wait in line; on the way out keep or discard it; hand it to the oldest
waiter or put it back.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

from .errors import PoolClosed, PoolTimeout
from .leaks import LeakDetector, NoLeakDetector
from .stats import PoolStats

__all__ = ["Lease", "Pool", "Reservation"]

T = TypeVar("T")

logger = logging.getLogger("mcpool")

# What a waiter is handed instead of an item: "make one yourself, the slot is
# yours", or "the pool was closed".
_GRANT = object()
_CLOSED = object()

# Items made before a fork are kept alive in the child for good: freeing a
# pylibmc client sends ``quit`` on the socket it shares with the parent, and
# an item's close hook may do the same (an FTP ``QUIT``). An extra reference
# count makes sure not even interpreter shutdown frees them.
_abandoned: list[object] = []


def _abandon(item: object) -> None:
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(item))
    _abandoned.append(item)


# Pools to reset eagerly in a child made by os.fork(), before any thread of
# the child can touch them.
_live_pools: weakref.WeakSet[Pool[object]] = weakref.WeakSet()


def _reset_pools_in_child() -> None:
    for pool in list(_live_pools):
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pools_in_child)

# In a child forked without the at-fork hooks (uWSGI's workers), several
# threads can find a pool's fork marker cleared at once; only the first may
# reset the pool, or a second reset orphans what the first handed out (and
# its connection stays open for good). One lock per process, made in that
# process, so that no lock a parent's thread held at the fork is ever used.
_fork_reset_locks: dict[int, threading.Lock] = {}


class _PidMarker:
    """Fallback fork detector: ``marker[0]`` is 0 once the pid has changed."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __getitem__(self, index: int) -> int:
        return int(os.getpid() == self.pid)


_MADV_WIPEONFORK = 18  # Linux >= 4.14; the mmap module does not name it


def _new_fork_marker() -> mmap.mmap | _PidMarker:
    """A byte that reads 1 in this process and 0 in any forked child.

    Forks that skip Python's at-fork hooks (uWSGI forks its workers from C by
    default) must still be noticed on the next reserve. ``os.getpid()`` is a
    system call (186 ns on the reference machine, a third of a whole
    reserve/release); reading a private page marked ``MADV_WIPEONFORK``, which
    the kernel hands to every child zero-filled, costs 21 ns.
    """
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        page.madvise(_MADV_WIPEONFORK)
    except (AttributeError, OSError, ValueError):
        return _PidMarker()
    page[0] = 1
    return page


def _discard_always(exc: BaseException) -> bool:
    return True


class Reservation(Generic[T]):
    """What :meth:`Pool.reserve` returns: a pooled item and its bookkeeping.

    Use it in one ``with`` statement: entering gives the item; leaving returns
    it to the pool, or discards it if the block raised an exception that the
    pool's *discard_on* calls fatal. The item is taken when
    :meth:`Pool.reserve` is called, so call it in the ``with`` line.

    >>> with pool.reserve() as item:  # doctest: +SKIP
    ...     item.use()
    """

    __slots__ = (
        "item",
        "pool",
        "generation",
        "expires_at",
        "idle_since",
        "reserved_at",
        "reserved_by",
        "reserved_stack",
        "__weakref__",
    )

    def __init__(self, item: T, generation: int, expires_at: float) -> None:
        #: the pooled object
        self.item = item
        #: the pool while the item is out; ``None`` while it is in the pool
        self.pool: Pool[T] | None = None
        self.generation = generation
        self.expires_at = expires_at
        self.idle_since = 0.0
        self.reserved_at = 0.0
        self.reserved_by = ""
        self.reserved_stack: list[tuple[str, int, str]] | None = None

    def __enter__(self) -> T:
        if self.pool is None:
            raise RuntimeError(
                "this reservation was already released; call pool.reserve() again"
            )
        return self.item

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool = self.pool
        if pool is None:
            return
        self.pool = None
        if (
            exc is None
            and not (pool._vetted or pool._waiters)
            and pool.max_spare is None
        ):
            # Pool._give's common case, inlined: a call less is a tenth of a
            # reserve and release. The unlocked look at the waiters keeps a
            # contended pool from taking the lock twice; it is checked again
            # under the lock, and anything else goes through Pool._give.
            lock = pool._lock
            lock.acquire()
            if not (pool._closed or pool._waiters):
                pool._idle.append(self)
                lock.release()
                return
            lock.release()
        pool._give(self, exc is not None and pool.discard_on(exc))


class _Waiter:
    """A caller in line. ``signal`` is held until the waiter is served."""

    __slots__ = ("signal", "result")

    def __init__(self) -> None:
        self.signal = threading.Lock()
        self.signal.acquire()
        self.result: object = None


class Pool(Generic[T]):
    """A bounded, fair, fork-safe pool of items made by *factory*.

    Items are made lazily, up to *max_size*. A caller that finds none idle and
    the pool full waits in line; a returning item goes straight to the oldest
    waiter. The most recently returned idle item is reused first, so a lightly
    loaded pool keeps few items warm and lets the rest age out.

    :param factory: makes a new item; called outside the pool's lock.
    :param max_size: the most items alive at once.
    :param min_idle: keep at least this many items idle; they are made at
        construction and replaced when discarded.
    :param timeout: default seconds :meth:`reserve` waits before raising
        :class:`~mcpool.PoolTimeout`.
    :param max_idle: close idle items above *min_idle* after this many
        seconds unused (checked when items come back, and by :meth:`prune`).
    :param max_spare: keep at most this many items idle; when one more comes
        back, the least recently used idle item is closed. ``None`` keeps
        every item that comes back.
    :param max_lifetime: replace an item this many seconds after it was made,
        less up to *lifetime_jitter* of it at random, so that items made
        together do not all expire together. An item in use is replaced when
        it comes back.
    :param check: called with an idle item before it is handed out; a false
        result or an exception discards it and another is taken.
    :param reset: called with an item when it comes back (a rollback, say);
        an exception discards the item.
    :param close: called with an item the pool drops; exceptions are logged.
    :param discard_on: decides, from the exception that left a
        ``with pool.reserve()`` block, whether the item is broken. By default
        every exception discards the item.
    :param leak_timeout: log items held longer than this, with the stack of
        the reservation, and name the longest holders in timeout errors.
    :param clock: the monotonic clock for ageing and leaks, injectable in tests.
    :param name: shown in logs and errors.

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
        max_idle: float | None = None,
        max_spare: int | None = None,
        max_lifetime: float | None = None,
        lifetime_jitter: float = 0.1,
        check: Callable[[T], object] | None = None,
        reset: Callable[[T], object] | None = None,
        close: Callable[[T], object] | None = None,
        discard_on: Callable[[BaseException], bool] | None = None,
        leak_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        if not 0 <= min_idle <= max_size:
            raise ValueError(f"min_idle must be within 0..max_size, got {min_idle}")
        if max_spare is not None and max_spare < min_idle:
            raise ValueError(
                f"max_spare must be >= min_idle ({min_idle}), got {max_spare}"
            )
        if not 0 <= lifetime_jitter < 1:
            raise ValueError(
                f"lifetime_jitter must be in [0, 1), got {lifetime_jitter}"
            )
        self.factory = factory
        self.max_size = max_size
        self.min_idle = min_idle
        self.timeout = timeout
        self.max_idle = max_idle
        self.max_spare = max_spare
        self.max_lifetime = max_lifetime
        self.lifetime_jitter = lifetime_jitter
        self.check = check
        self._reset = reset
        self.close_item = close
        self.discard_on: Callable[[BaseException], bool] = discard_on or _discard_always
        self.leak_timeout = leak_timeout
        self.clock = clock
        self.name = name or f"{type(self).__name__}@{id(self):x}"
        self._leaks: LeakDetector | NoLeakDetector = NoLeakDetector()
        if leak_timeout is not None:
            self._leaks = LeakDetector(self.name, leak_timeout, clock)
        self._aged = max_idle is not None or max_lifetime is not None
        self._generation = 0
        self._init_state()
        self._update_vetting()
        _live_pools.add(self)  # type: ignore[arg-type]
        self._replenish()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._generation += 1
        self._idle: deque[Reservation[T]] = deque()
        self._waiters: deque[_Waiter] = deque()
        self._size = 0
        self._closed = False
        self._created = 0
        self._discarded = 0
        self._reserves = 0
        self._timeouts = 0
        self._waits = 0
        self._total_wait = 0.0
        self._max_wait = 0.0
        # Last: in a child forked without at-fork hooks, a thread that reads
        # the new marker skips the reset, so everything it reads next must
        # already be the child's own.
        self._fork_marker = _new_fork_marker()

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
            or self.check is not None
            or self._reset is not None
            or self.leak_timeout is not None
        )

    # -- public API -------------------------------------------------------

    def reserve(
        self, block: bool = True, timeout: float | None = None
    ) -> Reservation[T]:
        """Reserve an item for one ``with`` block.

        :param block: wait for an item when none is free. ``False`` raises
            :class:`~mcpool.PoolTimeout` at once, as ``pylibmc``'s pool raises
            ``queue.Empty``.
        :param timeout: seconds to wait; the pool's *timeout* by default.
        :raises PoolTimeout: no item within *timeout*.
        :raises PoolClosed: the pool is closed.

        >>> with pool.reserve(timeout=0.5) as item:  # doctest: +SKIP
        ...     item.use()
        """
        if not self._fork_marker[0]:
            self._after_unhooked_fork()
        lock = self._lock
        lock.acquire()
        idle = self._idle
        if idle and not self._waiters:
            # The fast path, inlined: one call less is a sixth of the cost.
            entry = idle.pop()
            self._reserves += 1
            lock.release()
        else:
            entry = self._take_locked(block, timeout)
        if self._vetted:
            entry = self._vet(entry, block, timeout)
        entry.pool = self
        return entry

    def checkout(self, block: bool = True, timeout: float | None = None) -> Lease[T]:
        """Reserve an item now and return a :class:`Lease` to release by hand.

        For code that cannot use a ``with`` block, such as WSGI middleware that
        holds a client until the server closes the response.

        >>> lease = pool.checkout()  # doctest: +SKIP
        >>> try:
        ...     lease.item.set("k", "v")
        ... finally:
        ...     lease.release()
        """
        return Lease(self.reserve(block, timeout))

    def stats(self) -> PoolStats:
        """A consistent snapshot of sizes and counters; see :class:`PoolStats`."""
        self._check_fork()
        with self._lock:
            idle = len(self._idle)
            return PoolStats(
                max_size=self.max_size,
                size=self._size,
                idle=idle,
                in_use=self._size - idle,
                waiting=len(self._waiters),
                created=self._created,
                discarded=self._discarded,
                reserves=self._reserves,
                timeouts=self._timeouts,
                waits=self._waits,
                total_wait=self._total_wait,
                max_wait=self._max_wait,
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
            dropped = list(self._idle)
            self._idle.clear()
            self._size -= len(dropped)
            self._discarded += len(dropped)
            while self._waiters:
                waiter = self._waiters.popleft()
                waiter.result = _CLOSED
                waiter.signal.release()
        for entry in dropped:
            self._close_entry(entry)

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
        for entry in dropped:
            self._close_entry(entry)
        self._replenish()
        return len(dropped)

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

    def _take_locked(self, block: bool, timeout: float | None) -> Reservation[T]:
        """Take the most recently returned idle item, or make one, or wait.

        Called with the lock held; returns without it.
        """
        lock = self._lock
        if self._idle and not self._waiters:
            entry = self._idle.pop()
            self._reserves += 1
            lock.release()
            return entry
        if self._closed:
            lock.release()
            raise PoolClosed(f"{self.name} is closed; nothing can be reserved from it")
        if self._size < self.max_size and not self._waiters:
            self._size += 1
            self._reserves += 1
            lock.release()
            return self._make_in_slot()
        return self._wait_in_line(block, timeout)

    def _give(self, entry: Reservation[T], discard: bool) -> None:
        """Keep or discard a returning item; hand it to the oldest waiter."""
        if self._vetted:
            if entry.generation != self._generation:
                # Made before a fork that happened while it was out: the
                # parent owns it. Never use it, never free it. (A forked
                # child's pools are vetted, so only they pay for this test.)
                _abandon(entry.item)
                return
            discard = self._vet_returning(entry, discard)
        lock = self._lock
        lock.acquire()
        spare = self.max_spare
        if not (discard or self._closed or self._waiters) and (
            spare is None or len(self._idle) < spare
        ):
            self._idle.append(entry)
            lock.release()
            return
        if not self._fork_marker[0]:
            # A child forked without at-fork hooks, before its first reserve:
            # the idle items, the waiters and this item are all the parent's.
            lock.release()
            self._after_unhooked_fork()
            _abandon(entry.item)
            return
        if discard or self._closed:
            self._size -= 1
            self._discarded += 1
            self._grant_free_slots()
            lock.release()
            self._close_entry(entry)
            if self.min_idle:
                self._replenish()
        elif self._waiters:
            waiter = self._waiters.popleft()
            waiter.result = entry
            waiter.signal.release()
            lock.release()
        else:
            # More than max_spare would be idle: close the least recently used.
            self._idle.append(entry)
            surplus = self._idle.popleft()  # the entry itself when max_spare=0
            self._size -= 1
            self._discarded += 1
            lock.release()
            self._close_entry(surplus)

    # -- the slow paths ---------------------------------------------------

    def _wait_in_line(self, block: bool, timeout: float | None) -> Reservation[T]:
        """Wait for a handoff; called with the lock held, returns without it."""
        if timeout is None:
            timeout = self.timeout
        if not block or timeout <= 0:
            self._timeouts += 1
            message = self._timeout_message(0.0, block)
            self._lock.release()
            raise PoolTimeout(message)
        waiter = _Waiter()
        self._waiters.append(waiter)
        self._lock.release()
        started = time.monotonic()
        waiter.signal.acquire(timeout=timeout)
        waited = time.monotonic() - started
        with self._lock:
            self._waits += 1
            self._total_wait += waited
            self._max_wait = max(self._max_wait, waited)
            result = waiter.result
            if result is None:
                # Not served in time. A waiter served between its deadline and
                # this lock keeps what it was given (below), so a timed-out
                # waiter never holds an item that nobody will return.
                self._waiters.remove(waiter)
                self._timeouts += 1
                raise PoolTimeout(self._timeout_message(waited, block))
            if result is _CLOSED:
                raise PoolClosed(f"{self.name} was closed while waiting for an item")
            self._reserves += 1
        if result is _GRANT:
            return self._make_in_slot()
        return result  # type: ignore[return-value]

    def _make_in_slot(self) -> Reservation[T]:
        """Make an item for a slot already counted in ``_size`` and ``_reserves``."""
        try:
            item = self.factory()
        except BaseException:
            with self._lock:
                self._size -= 1
                self._reserves -= 1
                self._grant_free_slots()
            raise
        expires_at = float("inf")
        if self.max_lifetime is not None:
            jitter = 1.0 - self.lifetime_jitter * random.random()
            expires_at = self.clock() + self.max_lifetime * jitter
        with self._lock:
            self._created += 1
        return Reservation(item, self._generation, expires_at)

    def _grant_free_slots(self) -> None:
        """Let waiters make items in free slots; called with the lock held."""
        while self._waiters and self._size < self.max_size and not self._closed:
            waiter = self._waiters.popleft()
            self._size += 1
            waiter.result = _GRANT
            waiter.signal.release()

    def _vet(
        self, entry: Reservation[T], block: bool, timeout: float | None
    ) -> Reservation[T]:
        """Apply the optional checks to an item about to be handed out."""
        while not self._usable(entry):
            self._give(entry, discard=True)
            with self._lock:
                self._reserves -= 1
            self._lock.acquire()
            entry = self._take_locked(block, timeout)
        self._leaks.on_take(entry)
        if self._aged:
            self.prune()
        return entry

    def _usable(self, entry: Reservation[T]) -> bool:
        if self._aged and self.clock() >= entry.expires_at:
            return False
        if self.check is not None:
            return self._run_hook(self.check, entry, "check")
        return True

    def _vet_returning(self, entry: Reservation[T], discard: bool) -> bool:
        """Apply the optional hooks to a returning item; True means discard."""
        self._leaks.on_give(entry)
        if not discard and self._reset is not None:
            discard = not self._run_hook(self._reset, entry, "reset")
        if self._aged:
            now = entry.idle_since = self.clock()
            discard = discard or now >= entry.expires_at
        return discard

    def _run_hook(
        self, hook: Callable[[T], object], entry: Reservation[T], what: str
    ) -> bool:
        try:
            result = hook(entry.item)
        except Exception:
            logger.warning(
                "%s: %s hook raised; the item is discarded",
                self.name,
                what,
                exc_info=True,
            )
            return False
        return what != "check" or bool(result)

    def _pop_expired_idle(self, now: float) -> list[Reservation[T]]:
        """Pop idle items past their age; called with the lock held.

        The least recently used items sit at the left of the deque.
        """
        idle = self._idle
        keep = self.min_idle
        max_idle = self.max_idle
        dropped: list[Reservation[T]] = []
        for entry in list(idle):
            if len(idle) <= keep:
                break
            too_idle = max_idle is not None and now - entry.idle_since >= max_idle
            if too_idle or now >= entry.expires_at:
                idle.remove(entry)
                dropped.append(entry)
            elif max_idle is not None and self.max_lifetime is None:
                break  # idle times only grow leftwards: the rest are younger
        self._size -= len(dropped)
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
                    or self._size >= self.max_size
                ):
                    return
                self._size += 1
                self._reserves += 1
            entry = self._make_in_slot()
            with self._lock:
                self._reserves -= 1
            entry.idle_since = self.clock()
            self._give(entry, discard=False)

    def _close_entry(self, entry: Reservation[T]) -> None:
        if self.close_item is not None:
            try:
                self.close_item(entry.item)
            except Exception:
                logger.warning("%s: close hook raised", self.name, exc_info=True)

    def _check_fork(self) -> None:
        """Reset the pool if this is a child forked without at-fork hooks."""
        if not self._fork_marker[0]:
            self._after_unhooked_fork()

    def _after_fork(self) -> None:
        """In a forked child: forget, without closing, every item the parent made."""
        for entry in self._idle:
            _abandon(entry.item)
        for waiter in self._waiters:
            if isinstance(waiter.result, Reservation):
                _abandon(waiter.result.item)
        closed = self._closed
        self._on_fork()
        self._init_state()
        self._closed = closed
        # No replenishing here: this may run inside os.fork()'s at-fork hook,
        # where a factory that connects somewhere has no business running.
        self._update_vetting()

    def _after_unhooked_fork(self) -> None:
        """Reset once in a child whose fork ran no at-fork hooks."""
        with _fork_reset_locks.setdefault(os.getpid(), threading.Lock()):
            if not self._fork_marker[0]:
                self._after_fork()

    def _on_fork(self) -> None:
        """Subclass hook, run in a forked child before the state is reset."""

    def _timeout_message(self, waited: float, block: bool) -> str:
        idle = len(self._idle)
        state = (
            f"size={self._size}, max_size={self.max_size}, "
            f"in_use={self._size - idle}, idle={idle}, waiting={len(self._waiters)}"
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


class Lease(Generic[T]):
    """An item taken by :meth:`Pool.checkout`, released by hand.

    :meth:`release` is idempotent: the first call returns the item, later
    calls do nothing, so every cleanup path may call it.
    """

    __slots__ = ("_entry", "__weakref__")

    def __init__(self, entry: Reservation[T]) -> None:
        self._entry: Reservation[T] | None = entry

    @property
    def item(self) -> T:
        """The reserved item.

        :raises RuntimeError: after :meth:`release`.
        """
        entry = self._entry
        if entry is None:
            raise RuntimeError("the lease was released; check out a new one")
        return entry.item

    @property
    def released(self) -> bool:
        """True once :meth:`release` was called."""
        return self._entry is None

    def release(self, discard: bool = False, exc: BaseException | None = None) -> None:
        """Return the item to the pool, once.

        :param discard: close the item instead of returning it.
        :param exc: an exception raised while the item was in use; the pool's
            *discard_on* decides whether it means the item is broken.
        """
        entry = self._entry
        if entry is None:
            return
        self._entry = None
        if not discard:
            # The reservation's own return path, with its inlined common case.
            entry.__exit__(None, exc, None)
            return
        pool = entry.pool
        assert pool is not None, "a lease's entry is out until the lease releases it"
        entry.pool = None
        pool._give(entry, True)

    def __enter__(self) -> T:
        return self.item

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release(exc=exc)
