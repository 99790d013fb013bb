"""Fork detection: a forked child never uses or frees its parent's items.

A pool notices a fork two ways. :func:`os.register_at_fork` resets every live
pool in a child made by :func:`os.fork` before any thread of the child runs.
Forks that skip Python's at-fork hooks (uWSGI forks its workers from C) are
caught on the next reserve by a *fork marker*: one byte that reads 1 in the
process that made it and 0 in every child.

Items made before a fork are *abandoned* in the child, never closed: closing
a pylibmc client sends ``quit`` on the socket it shares with the parent.

.. code-block:: python

    marker = new_fork_marker()
    if not marker[0]:
        ...  # this is a forked child: reset
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import weakref
from typing import Any, Protocol

__all__ = [
    "PidMarker",
    "abandon",
    "new_fork_marker",
    "reset_lock",
    "watch_for_forks",
]


class _ResetsAfterFork(Protocol):
    def _after_fork(self) -> None: ...


# Abandoned items are kept alive in the child for good: an extra reference
# count makes sure not even interpreter shutdown frees them.
_abandoned: list[object] = []


def abandon(item: object) -> None:
    """Keep *item*, made by a parent process, alive and untouched for good."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(item))
    _abandoned.append(item)


# Pools to reset eagerly in a child made by os.fork(), before any thread of
# the child can touch them.
_live_pools: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_for_forks(pool: _ResetsAfterFork) -> None:
    """Call ``pool._after_fork()`` in every child forked with :func:`os.fork`."""
    _live_pools.add(pool)


def _reset_pools_in_child() -> None:
    for pool in list(_live_pools):
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pools_in_child)

# In a child forked without the at-fork hooks, several threads can find a
# pool's fork marker cleared at once; only the first may reset the pool, or a
# second reset orphans what the first handed out. One lock per process, made
# in that process, so that no lock a parent's thread held at the fork is used.
_reset_locks: dict[int, threading.Lock] = {}


def reset_lock() -> threading.Lock:
    """The lock that serialises resets after an unhooked fork, in this process."""
    return _reset_locks.setdefault(os.getpid(), threading.Lock())


class PidMarker:
    """Fallback fork marker: ``marker[0]`` is 0 once the pid has changed."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __getitem__(self, index: int) -> int:
        return int(os.getpid() == self.pid)


_MADV_WIPEONFORK = 18  # Linux >= 4.14; the mmap module does not name it


def new_fork_marker() -> mmap.mmap | PidMarker:
    """A byte that reads 1 in this process and 0 in any forked child.

    ``os.getpid()`` is a system call (186 ns on the reference machine, a
    third of a whole reserve/release); reading a private page marked
    ``MADV_WIPEONFORK``, which the kernel hands to every child zero-filled,
    costs 21 ns.
    """
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        page.madvise(_MADV_WIPEONFORK)
    except (AttributeError, OSError, ValueError):
        return PidMarker()
    page[0] = 1
    return page
