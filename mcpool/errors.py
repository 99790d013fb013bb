"""The exceptions mcpool raises.

Each one is re-exported from :mod:`mcpool` and reports itself as
``mcpool.<Name>`` in tracebacks.
"""

from __future__ import annotations

import queue

__all__ = ["InvalidKey", "PoolClosed", "PoolError", "PoolTimeout"]


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


for _cls in (PoolError, PoolTimeout, PoolClosed, InvalidKey):
    _cls.__module__ = "mcpool"
del _cls
