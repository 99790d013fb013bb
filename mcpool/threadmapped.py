"""One client per thread, given back when the thread ends: drop-in for
``pylibmc.ThreadMappedPool``.

.. code-block:: python

    import pylibmc
    from mcpool import ThreadMappedPool

    master = pylibmc.Client(["127.0.0.1:11211"], binary=True)
    pool = ThreadMappedPool(master, max_spare=8)

    def handle(request):
        with pool.reserve() as mc:  # the same client every time in this thread
            return mc.get(request.key)

A thread's first :meth:`~ThreadMappedPool.reserve` binds a client to the
thread; later ones, nested or not, hand out that client again without
touching the pool's lock. When the thread ends, even without calling
:meth:`~ThreadMappedPool.relinquish`, the client goes back to the pool and
the next thread that needs one gets it, so a server that starts a thread per
request reuses connections instead of opening one per request. The clients
live in the same core as :class:`~mcpool.ClientPool`'s: same stats, cap and
fair waiting, fork safety, behaviour sync, discard-on-error and ``close()``.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, NoReturn, cast

from .clientpool import ClientPool, ClientT, is_fatal_error
from .errors import PoolClosed
from .fork import abandon, new_fork_marker
from .lease import Lease
from .pool import Pool, Reservation

__all__ = ["GreenThreadsWarning", "ThreadBinding", "ThreadLease", "ThreadMappedPool"]

# What a binding does when its outermost block ends: nothing, go back to the
# pool (relinquish() was called inside the block), or be closed (a block
# raised a fatal error).
_KEEP = 0
_RETURN = 1
_DISCARD = 2

# The epoch of a binding that no longer holds a client: reads 0, like a
# stale epoch, so the next reserve() takes the slow path and binds anew.
_NO_EPOCH = b"\x00"


class GreenThreadsWarning(RuntimeWarning):
    """:class:`ThreadMappedPool` was created while gevent or eventlet had
    monkey-patched :mod:`threading`.

    Every greenlet is then a "thread" with a client of its own, and pylibmc,
    a C library doing blocking I/O, stalls the whole event loop during each
    call whatever the pool does. Use :class:`~mcpool.ClientPool` with
    *n_slots* set to the number of connections memcached should see.
    """


GreenThreadsWarning.__module__ = "mcpool"


def _green_threading() -> str | None:
    """Name the library that monkey-patched :mod:`threading`, if one did.

    Both keep a registry of what they patched; their modules are looked up in
    :data:`sys.modules` only, so neither is imported here.
    """
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        return "gevent"
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("thread"):
        return "eventlet"
    return None


class _PidEpoch:
    """Fallback epoch where ``MADV_WIPEONFORK`` is missing: reads 0 once set
    to 0 or once the pid has changed."""

    __slots__ = ("pid", "valid")

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.valid = True

    def __getitem__(self, index: int) -> int:
        return int(self.valid and os.getpid() == self.pid)

    def __setitem__(self, index: int, value: int) -> None:
        self.valid = bool(value)


_Epoch = mmap.mmap | _PidEpoch


def _new_epoch() -> _Epoch:
    """A byte that reads 1 until the pool writes 0 to it or the process forks.

    Every binding keeps the epoch it was last checked under, so one read of
    it is the whole fork, close and behaviour-change check of the fast path.
    """
    marker = new_fork_marker()
    if isinstance(marker, mmap.mmap):
        return marker
    return _PidEpoch()


class _Relinquished:
    """What a binding hands out once its client went back to the pool."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(
            "this client went back to the pool when its thread relinquished "
            "it; call pool.reserve() again"
        )

    def __repr__(self) -> str:
        return "<relinquished client>"


# Any: it stands in for the client in a binding whose client went back.
_RELINQUISHED: Any = _Relinquished()


class ThreadBinding(Reservation[ClientT]):
    """The client bound to one thread, returned by :meth:`ThreadMappedPool.reserve`.

    Use it in one ``with`` statement, as a :class:`~mcpool.Reservation`.
    Each :meth:`~ThreadMappedPool.reserve` in the thread returns the same
    binding and counts one level deeper; the client stays bound to the
    thread when the outermost block ends.
    """

    # Shares nothing with Reservation but its interface: one binding serves
    # every block of its thread.
    __slots__ = (
        "client",
        "depth",
        "then",
        "epoch",
        "fork_marker",
        "held",
        "owner",
        "thread_id",
    )

    def __init__(
        self,
        owner: ThreadMappedPool[ClientT],
        reservation: Reservation[ClientT],
        item: ClientT,
        epoch: _Epoch,
    ) -> None:
        #: the thread's client
        self.client: ClientT = item
        #: ``with`` blocks (and leases) open on this binding in its thread
        self.depth = 1
        #: what happens when ``depth`` drops to 0 (_KEEP, _RETURN, _DISCARD)
        self.then = _KEEP
        self.epoch: _Epoch | bytes = epoch
        # The core's fork marker when the client was taken: reads 0 in any
        # child, where the client is the parent's and must be left alone.
        self.fork_marker = owner._fork_marker
        # The core's reservation, in a list so that the one who pops it (this
        # thread, or whoever runs the thread-exit hook) is the only one to
        # give it back: list.pop is atomic.
        self.held = [reservation]
        self.owner: weakref.ref[ThreadMappedPool[ClientT]] = weakref.ref(owner)
        #: the ident of the thread it is bound to, its key in the pool's mapping
        self.thread_id = threading.get_ident()

    @property
    def item(self) -> ClientT:
        """The thread's client (the same as :attr:`client`)."""
        return self.client

    def __enter__(self) -> ClientT:
        return self.client

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.depth <= 0:
            return  # a second exit of a block that already ended
        self.depth -= 1
        if exc is not None or self.then:
            self._leave(exc, discard=False)

    def _leave(self, exc: BaseException | None, discard: bool) -> None:
        """After a block or lease ended with an error or with a return pending."""
        pool = self.owner()
        if pool is None:
            return
        if discard or (exc is not None and pool.discard_on(exc)):
            # Outer blocks of this thread may still be using the client:
            # close it when the outermost one ends.
            self.then = _DISCARD
        if self.depth <= 0 and self.then:
            pool._unbind(self, discard=self.then == _DISCARD)


class _ThreadExit:
    """Lives in the thread's local storage only: when the thread ends, the
    storage is cleared, this dies, and the thread's client goes back.

    It is kept apart from the binding so that code holding on to a binding
    after its thread ended does not keep the client from the pool.
    """

    __slots__ = ("binding",)

    def __init__(self, binding: ThreadBinding[Any]) -> None:
        self.binding = binding

    def __del__(self) -> None:
        binding = self.binding
        if not binding.held:
            return
        pool = binding.owner()
        if pool is not None:
            pool._unbind(binding, discard=False)
        elif not binding.fork_marker[0]:
            # A forked child clearing its parent's thread states after the
            # pool itself was dropped.
            _unbind_abandoned(binding)


def _unbind_abandoned(binding: ThreadBinding[Any]) -> None:
    """Forget a binding made before a fork: never use or free its client."""
    try:
        reservation = binding.held.pop()
    except IndexError:
        return
    abandon(reservation.item)
    binding.client = _RELINQUISHED
    binding.epoch = _NO_EPOCH


class ThreadLease(Lease[ClientT]):
    """What :meth:`ThreadMappedPool.checkout` returns: a :class:`~mcpool.Lease`
    on the thread's client.

    :meth:`release` ends the lease; the client stays bound to the thread
    (unless the release discards it, or :meth:`ThreadMappedPool.relinquish`
    was called meanwhile).
    """

    __slots__ = ()

    def release(self, discard: bool = False, exc: BaseException | None = None) -> None:
        """End the lease, once; later calls do nothing.

        :param discard: close the client instead of keeping it bound.
        :param exc: an exception raised while the client was in use; the
            pool's *discard_on* decides whether it means the client is broken.
        """
        binding = cast("ThreadBinding[ClientT] | None", self._entry)
        if binding is None:
            return
        self._entry = None
        binding.depth -= 1
        if discard or exc is not None or binding.then:
            binding._leave(exc, discard)


class ThreadMappedPool(ClientPool[ClientT]):
    """A pool that binds one clone of *master* to each thread that reserves.

    Drop-in for ``pylibmc.ThreadMappedPool``: ``ThreadMappedPool(mc)``,
    ``with pool.reserve() as mc:`` and ``pool.relinquish()`` work as there.
    Unlike pylibmc's:

    * a thread's client goes back to the pool when the thread ends, with or
      without :meth:`relinquish`, and the next thread reuses it; at most
      *max_spare* clients wait unused, more are closed;
    * nested ``reserve()`` in one thread yields the same client;
    * *max_size* caps the clients alive at once: a thread that finds them all
      bound to other threads waits, in arrival order, until one of those
      threads ends or relinquishes, and raises :class:`~mcpool.PoolTimeout`
      after *timeout* seconds;
    * a client whose block raised a fatal pylibmc error
      (:func:`~mcpool.is_fatal_error`) is closed and replaced; forked
      children never touch their parent's clients; :meth:`set_behaviors`
      reaches every client; :meth:`close` closes them all;
    * it is not a :class:`dict`: ``len(pool)``, ``ident in pool``,
      :meth:`keys` and iteration tell which threads hold a client, and
      ``pool[ident]``, :meth:`get`, :meth:`pop` and ``del`` work on the
      calling thread's own client only. Calls that would hand out or take
      away another thread's client raise, saying what to use instead
      (:doc:`/migrating/pylibmc`).

    Reserving again in a thread that holds a client costs a thread-local
    lookup and a one-byte read; the pool's lock is taken only when a thread
    gets or gives back a client. :meth:`stats` counts clients bound to
    threads as ``in_use`` and the spares as ``idle``; ``reserves`` counts
    bindings, not the reserves served from a thread's own client.

    :param master: the client to clone; it is never used for requests.
    :param max_size: the most clients alive at once; ``None`` (the default)
        for no cap, which :meth:`stats` reports as :data:`sys.maxsize`.
    :param max_spare: how many clients given back by ended threads are kept
        for the next threads.
    :param timeout: seconds a thread waits for a client when *max_size* are
        bound to other threads.
    :param max_waiting: the most threads waiting for a client at once; one
        more raises :class:`~mcpool.TooManyRequests` at once.
    :param keepalive: check a spare idle at least this many seconds before a
        thread takes it (:meth:`~mcpool.ClientPool.answers`).
    :param max_idle: close spares unused for this many seconds.

    The other keyword arguments are :class:`~mcpool.ClientPool`'s.

    :raises ValueError: *max_size* below 1 or *max_spare* below 0.

    If gevent or eventlet has monkey-patched :mod:`threading`, construction
    warns with :class:`GreenThreadsWarning`: use :class:`~mcpool.ClientPool`.

    >>> pool = ThreadMappedPool(pylibmc.Client([server.address]))  # doctest: +SKIP
    >>> with pool.reserve() as mc:  # doctest: +SKIP
    ...     with pool.reserve() as again:
    ...         again is mc
    True

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        master: ClientT,
        max_size: int | None = None,
        *,
        max_spare: int = 8,
        timeout: float = 2.0,
        max_waiting: int | None = None,
        keepalive: float | None = None,
        max_idle: float | None = None,
        discard_on: Callable[[BaseException], bool] = is_fatal_error,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
        timings: bool = False,
    ) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be >= 1 or None, got {max_size}")
        if max_spare < 0:
            raise ValueError(f"max_spare must be >= 0, got {max_spare}")
        green = _green_threading()
        if green is not None:
            warnings.warn(
                f"threading is monkey-patched by {green}: ThreadMappedPool would "
                "bind a client to every greenlet, and pylibmc blocks the event "
                "loop during each call anyway; use mcpool.ClientPool(master, n) "
                "with n the connections memcached should see",
                GreenThreadsWarning,
                stacklevel=2,
            )
        self._local = threading.local()
        self._epoch = _new_epoch()
        # Thread ident -> binding, for the dict-like methods only: the fast
        # path never reads it; bindings enter and leave it on the slow path.
        self._threads: dict[int, ThreadBinding[ClientT]] = {}
        self._threads_lock = threading.Lock()
        super().__init__(
            master,
            sys.maxsize if max_size is None else max_size,
            timeout=timeout,
            max_waiting=max_waiting,
            keepalive=keepalive,
            max_idle=max_idle,
            max_spare=max_spare,
            discard_on=discard_on,
            clock=clock,
            name=name,
            timings=timings,
        )

    # -- the per-thread path ----------------------------------------------

    def reserve(
        self, block: bool = True, timeout: float | None = None
    ) -> ThreadBinding[ClientT]:
        """Reserve the thread's client for one ``with`` block.

        The first call in a thread takes a client from the pool (a spare, a
        new clone, or after waiting in line); later calls in the same thread,
        nested or not, return the same client at once.

        :param block: wait for a client when *max_size* are bound to other
            threads; ``False`` raises at once.
        :param timeout: seconds to wait; the pool's *timeout* by default.
        :raises PoolTimeout: no client within *timeout*.
        :raises PoolClosed: the pool is closed.

        >>> with pool.reserve() as mc:  # doctest: +SKIP
        ...     mc.incr("hits")
        """
        try:
            binding: ThreadBinding[ClientT] = self._local.binding
        except AttributeError:
            return self._bind(block, timeout)
        if binding.epoch[0]:
            binding.depth += 1
            return binding
        return self._rebind(binding, block, timeout)

    def checkout(
        self, block: bool = True, timeout: float | None = None
    ) -> ThreadLease[ClientT]:
        """Reserve the thread's client and return a :class:`ThreadLease`.

        For code that cannot use a ``with`` block, such as WSGI middleware;
        releasing the lease leaves the client bound to the thread.

        >>> lease = pool.checkout()  # doctest: +SKIP
        >>> try:
        ...     lease.item.set("k", "v")
        ... finally:
        ...     lease.release()
        """
        return ThreadLease(self.reserve(block, timeout))

    def relinquish(self) -> None:
        """Give the calling thread's client back to the pool now.

        Not needed before a thread ends (that gives it back too), but useful
        in a long-lived thread that is done with memcached for a while.
        Inside a ``with pool.reserve()`` block the client goes back when the
        outermost block ends. Calling it in a thread that holds no client, or
        twice, does nothing; it never affects other threads' clients.
        ``pylibmc`` returns the unmapped client; this returns ``None``, since
        the client now belongs to the pool.
        """
        binding: ThreadBinding[ClientT] | None = getattr(self._local, "binding", None)
        if binding is None or not binding.held:
            return
        if binding.depth > 0:
            binding.then = max(binding.then, _RETURN)
            return
        self._unbind(binding, discard=False)

    def _bind(self, block: bool, timeout: float | None) -> ThreadBinding[ClientT]:
        """Take a client from the core and bind it to the calling thread."""
        epoch = self._epoch  # read first: a change after this is seen next time
        reservation = Pool.reserve(self, block, timeout)
        item = reservation.__enter__()
        try:
            if self._behaviors_version:
                with self._lock:
                    self._sync_behaviors(item)
            binding = ThreadBinding(self, reservation, item, epoch)
        except BaseException:
            self._release(reservation, None, discard=True)
            raise
        local = self._local  # after the core's reserve, which resets it in a child
        local.binding = binding
        local.exit_hook = _ThreadExit(binding)
        with self._threads_lock:
            self._threads[binding.thread_id] = binding
        return binding

    def _rebind(
        self, binding: ThreadBinding[ClientT], block: bool, timeout: float | None
    ) -> ThreadBinding[ClientT]:
        """The thread's binding is out of date: forked, closed, behaviours
        changed, or its client was given back."""
        if binding.held and not binding.fork_marker[0]:
            _unbind_abandoned(binding)
        if not binding.held:
            return self._bind(block, timeout)
        if self._closed:
            if binding.depth > 0:
                binding.then = max(binding.then, _RETURN)
            else:
                self._unbind(binding, discard=False)
            raise PoolClosed(f"{self.name} is closed; nothing can be reserved from it")
        if binding.held[-1]._slot in self._retiring:
            # drain() wants this client replaced: now, unless a block of this
            # thread is using it; then at the next outermost reserve (the
            # epoch stays stale until then).
            if binding.depth == 0:
                self._unbind(binding, discard=True)
                return self._bind(block, timeout)
            binding.depth += 1
            return binding
        epoch = self._epoch
        if self._behaviors_version:
            with self._lock:
                self._sync_behaviors(binding.client)
        binding.epoch = epoch
        binding.depth += 1
        return binding

    def _unbind(self, binding: ThreadBinding[ClientT], discard: bool) -> None:
        """Give a binding's client back to the core, once, from any thread."""
        if not binding.fork_marker[0]:
            # In a child forked without Python's at-fork hooks, before the
            # core noticed: the client is the parent's.
            _unbind_abandoned(binding)
            return
        try:
            reservation = binding.held.pop()
        except IndexError:
            return
        binding.client = _RELINQUISHED
        binding.epoch = _NO_EPOCH
        binding.then = _KEEP
        self._forget(binding)
        self._release(reservation, None, discard)

    def _forget(self, binding: ThreadBinding[ClientT]) -> None:
        """Take *binding* out of the thread mapping, unless its thread ident
        already belongs to a newer binding (idents are reused)."""
        with self._threads_lock:
            if self._threads.get(binding.thread_id) is binding:
                del self._threads[binding.thread_id]

    # -- the mapping of threads to clients, as pylibmc's dict -------------

    def __len__(self) -> int:
        """How many threads hold a client now; ``len(pool)`` as in pylibmc."""
        return len(self._threads)

    def __bool__(self) -> bool:
        # Without this, __len__ would make a pool that no thread has reserved
        # from yet false, and ``if pool:`` would skip it.
        return True

    def __contains__(self, thread_id: object) -> bool:
        """Whether the thread with ident *thread_id* holds a client."""
        return thread_id in self._threads

    def keys(self) -> list[int]:
        """The idents of the threads that hold a client now, as a new list."""
        with self._threads_lock:
            return list(self._threads)

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys())

    def __getitem__(self, thread_id: int) -> ClientT:
        """The client of the calling thread, ``pool[threading.get_ident()]``.

        :raises KeyError: the thread holds no client.
        :raises ValueError: *thread_id* is another thread's, whose client is
            that thread's alone.
        """
        return self._own_binding(thread_id).item

    def get(self, thread_id: int, default: Any = None) -> ClientT | Any:
        """The calling thread's client, or *default* if it holds none.

        :raises ValueError: *thread_id* is another thread's that holds a client.
        """
        try:
            return self[thread_id]
        except KeyError:
            return default

    def pop(self, thread_id: int, *default: Any) -> Any:
        """Give the calling thread's client back to the pool, as :meth:`relinquish`.

        pylibmc's returns the client; this returns ``None`` since the client
        now belongs to the pool (*default* if the thread held none). Inside
        a ``with pool.reserve()`` block the client goes back when the
        outermost block ends.

        :raises KeyError: the thread holds no client and no *default* is given.
        :raises ValueError: *thread_id* is another thread's: that thread may be
            using its client at this very moment.
        """
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        try:
            self._own_binding(thread_id)
        except KeyError:
            if default:
                return default[0]
            raise
        self.relinquish()
        return None

    def __delitem__(self, thread_id: int) -> None:
        """``del pool[threading.get_ident()]``: :meth:`relinquish`."""
        self.pop(thread_id)

    def _own_binding(self, thread_id: int) -> ThreadBinding[ClientT]:
        binding = self._threads.get(thread_id)
        if binding is None or not binding.held:
            raise KeyError(thread_id)
        if thread_id != threading.get_ident():
            raise ValueError(
                f"the client of thread {thread_id} is bound to another thread, "
                "which may be using it right now: it is never handed to a second "
                "thread. That thread gives it back by calling pool.relinquish(), "
                "or by ending; clients of finished threads are back already"
            )
        return binding

    def _refuse(self, method: str, instead: str) -> NoReturn:
        raise TypeError(
            f"ThreadMappedPool.{method} is not supported: {instead}. "
            "(pylibmc's ThreadMappedPool is a dict; this one maps threads to "
            "clients only through keys(), len(), in, and get()/pop() of the "
            "calling thread.)"
        )

    def values(self) -> NoReturn:
        """Refused: it would hand out clients bound to other threads."""
        self._refuse(
            "values()",
            "it would hand out clients bound to other threads; keys() lists "
            "the threads holding one, stats() counts them, and close() closes "
            "them all",
        )

    def items(self) -> NoReturn:
        """Refused: it would hand out clients bound to other threads."""
        self._refuse(
            "items()",
            "it would hand out clients bound to other threads; keys() lists "
            "the threads holding one, stats() counts them, and close() closes "
            "them all",
        )

    def copy(self) -> NoReturn:
        """Refused: it would hand out clients bound to other threads."""
        self._refuse(
            "copy()",
            "it would hand out clients bound to other threads; keys() lists "
            "the threads holding one",
        )

    def popitem(self) -> NoReturn:
        """Refused: it would take a client from whichever thread holds one."""
        self._refuse(
            "popitem()",
            "it would take a client from another thread, which may be using "
            "it; each thread gives its own back with relinquish(), or by ending",
        )

    def clear(self) -> NoReturn:
        """Refused: it would take clients from threads that may be using them."""
        self._refuse(
            "clear()",
            "it would take their clients from threads that may be using them; "
            "close() closes every client as its thread lets go of it, and "
            "relinquish() gives back the calling thread's",
        )

    def __setitem__(self, thread_id: int, client: Any) -> NoReturn:
        self._refuse(
            "__setitem__()",
            "the pool makes its clients and binds them to threads itself; "
            "pool.reserve() binds one to the calling thread",
        )

    def setdefault(self, thread_id: int, client: Any = None) -> NoReturn:
        """Refused: the pool binds clients itself; use :meth:`reserve`."""
        self._refuse(
            "setdefault()",
            "the pool makes its clients and binds them to threads itself; "
            "pool.reserve() binds one to the calling thread",
        )

    def update(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused: the pool binds clients itself; use :meth:`reserve`."""
        self._refuse(
            "update()",
            "the pool makes its clients and binds them to threads itself; "
            "pool.reserve() binds one to the calling thread",
        )

    # -- the pool-wide changes --------------------------------------------

    def set_behaviors(self, behaviors: Mapping[str, Any]) -> None:
        """Set behaviours on the master and on every client.

        Spares get them now; each thread's client gets them at the thread's
        next :meth:`reserve`.

        >>> pool.set_behaviors({"tcp_nodelay": True})  # doctest: +SKIP
        """
        super().set_behaviors(behaviors)
        with self._lock:
            stale, self._epoch = self._epoch, _new_epoch()
            if self._closed:
                self._epoch[0] = 0
            stale[0] = 0

    def drain(self) -> None:
        """Replace every client: spares now, each thread's at its next
        outermost :meth:`reserve` (or when it ends or relinquishes).

        >>> pool.drain()  # doctest: +SKIP
        """
        super().drain()
        with self._lock:
            stale, self._epoch = self._epoch, _new_epoch()
            if self._closed:
                self._epoch[0] = 0
            stale[0] = 0

    def close(self) -> None:
        """Close the pool.

        Spares are closed now. A client bound to a thread is closed when that
        thread ends, relinquishes, or reserves again (which raises
        :class:`~mcpool.PoolClosed`).
        """
        super().close()
        with self._lock:
            self._epoch[0] = 0

    def _on_fork(self) -> None:
        super()._on_fork()
        # The child's threads start without clients; the forking thread's
        # binding, the parent's, is forgotten by its exit hook.
        self._local = threading.local()
        self._epoch = _new_epoch()
        self._threads = {}
        self._threads_lock = threading.Lock()
        if self._closed:  # a closed pool stays closed in the child
            self._epoch[0] = 0
