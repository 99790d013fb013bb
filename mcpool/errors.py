"""The exceptions mcpool raises.

Each one is re-exported from :mod:`mcpool` and reports itself as
``mcpool.<Name>`` in tracebacks.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence

import pylibmc

__all__ = [
    "InvalidKey",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "ServerUnavailable",
    "ValueTooLarge",
]


class PoolError(Exception):
    """Base class of the errors a pool raises."""


class PoolTimeout(PoolError, queue.Empty):
    """No item could be reserved in time.

    It subclasses :class:`queue.Empty`, so code written for
    ``pylibmc.ClientPool`` that catches ``queue.Empty`` keeps working. The
    message says how long the caller waited, the pool's state, and what to
    change.
    """


class PoolClosed(PoolError):
    """The pool was closed: nothing can be reserved from it any more."""


class InvalidKey(ValueError):
    """A memcached key that must not reach the wire; the message says why."""


class ServerUnavailable(pylibmc.Error):
    """A write could not reach its server: down, hung, refusing, or ejected.

    :class:`mcpool.Client` raises it, whatever error class or return value
    the libmemcached build used for the failure (a timeout, ``ServerDown``,
    ``ServerDead``, a connection error). Reads never raise it: they return a
    miss. It subclasses :class:`pylibmc.Error`, so existing ``except
    pylibmc.Error`` blocks still catch it; the client that raised it is
    healthy and a :class:`~mcpool.ClientPool` keeps it.

    :attr keys: the keys whose write was not applied.
    """

    def __init__(self, message: str, keys: Sequence[str | bytes] = ()) -> None:
        super().__init__(message)
        self.keys = list(keys)


class ValueTooLarge(pylibmc.TooBig):
    """A value was larger than the server's item size limit (``memcached -I``).

    The key then holds no value: :class:`mcpool.Client` deletes what the
    server kept, so the cache never serves the value the write meant to
    replace. It subclasses :class:`pylibmc.TooBig`.

    :attr keys: the keys whose value was too large.
    :attr failed: every key of the call that was not stored (for the
        ``*_multi`` calls, also the keys that failed for another reason, as
        in their return value).
    """

    def __init__(
        self,
        message: str,
        keys: Sequence[str | bytes] = (),
        failed: Sequence[str | bytes] | None = None,
    ) -> None:
        super().__init__(message)
        self.keys = list(keys)
        self.failed = list(self.keys if failed is None else failed)


for _cls in (
    PoolError,
    PoolTimeout,
    PoolClosed,
    InvalidKey,
    ServerUnavailable,
    ValueTooLarge,
):
    _cls.__module__ = "mcpool"
del _cls
