"""mcpool: a fair, bounded, observable, fork-safe memcached client pool.

>>> import mcpool
>>> pool = mcpool.ClientPool(mcpool.Client(["127.0.0.1:11211"]), 8)  # doctest: +SKIP
>>> with pool.reserve() as mc:  # doctest: +SKIP
...     mc.set("k", "v")
"""

from __future__ import annotations

# Every mcpool module runs this first, so a missing binding is reported here,
# once, with what to install. Two distributions provide the module pylibmc
# (pylibmc and its fork pylibmc2), so mcpool depends on neither by default.
try:
    import pylibmc  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"mcpool needs the module pylibmc, which could not be imported ({exc}). "
        "Install one of the two distributions that provide it: "
        "'pip install mcpool[pylibmc]' (pylibmc: wheels for CPython 3.10-3.11; "
        "elsewhere pip builds it from source, which needs libmemcached's and "
        "zlib's headers, e.g. apt-get install libmemcached-dev zlib1g-dev) or "
        "'pip install mcpool[pylibmc2]' (pylibmc2: wheels for CPython 3.10-3.14). "
        "Never both: they install the same files.",
        name="pylibmc",
    ) from exc

from .client import Client
from .clientpool import ClientPool, is_fatal_error
from .errors import (
    InvalidKey,
    PoolClosed,
    PoolError,
    PoolTimeout,
    ServerUnavailable,
    TooManyRequests,
    ValueTooLarge,
)
from .histogram import Histogram
from .keys import safe_key, validate_key
from .lease import Lease
from .middleware import PoolMiddleware, RequestClient
from .pool import Pool, Reservation
from .stats import PoolStats
from .statsapp import StatsApp
from .telemetry import PoolListener
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
    "Histogram",
    "InvalidKey",
    "Lease",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolListener",
    "PoolMiddleware",
    "PoolStats",
    "PoolTimeout",
    "RequestClient",
    "Reservation",
    "ServerUnavailable",
    "StatsApp",
    "ThreadBinding",
    "ThreadLease",
    "ThreadMappedPool",
    "TooManyRequests",
    "ValueTooLarge",
    "is_fatal_error",
    "safe_key",
    "validate_key",
]
