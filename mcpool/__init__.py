"""mcpool: a fair, bounded, observable, fork-safe memcached client pool.

>>> import pylibmc, mcpool
>>> pool = mcpool.ClientPool(pylibmc.Client(["127.0.0.1:11211"]), 8)  # doctest: +SKIP
>>> with pool.reserve() as mc:  # doctest: +SKIP
...     mc.set("k", "v")
"""

from __future__ import annotations

from .client import Client
from .clientpool import ClientPool, is_fatal_error
from .errors import (
    InvalidKey,
    PoolClosed,
    PoolError,
    PoolTimeout,
    ServerUnavailable,
    ValueTooLarge,
)
from .keys import safe_key, validate_key
from .lease import Lease
from .middleware import PoolMiddleware, RequestClient
from .pool import Pool, Reservation
from .stats import PoolStats
from .threadmapped import (
    GreenThreadsWarning,
    ThreadBinding,
    ThreadLease,
    ThreadMappedPool,
)

__all__ = [
    "Client",
    "ClientPool",
    "GreenThreadsWarning",
    "InvalidKey",
    "Lease",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolMiddleware",
    "PoolStats",
    "PoolTimeout",
    "RequestClient",
    "Reservation",
    "ServerUnavailable",
    "ThreadBinding",
    "ThreadLease",
    "ThreadMappedPool",
    "ValueTooLarge",
    "is_fatal_error",
    "safe_key",
    "validate_key",
]
