"""cachelib's own memcached tests, unchanged, on mcpool.cachelib.MemcachedCache.

The test files come from the sdist of the installed cachelib
(``upstream_tests.py``). What is swapped, and nothing else:

- the name ``MemcachedCache`` in cachelib's test module is a subclass of
  :class:`mcpool.cachelib.MemcachedCache` that sends the address cachelib's
  tests use (``127.0.0.1:11212``, or none) to a memcached of this suite's,
  with generous timeouts for a loaded machine;
- cachelib's ``memcached_server`` fixture (which starts memcached through
  pytest-xprocess on port 11212) is one that starts a server from
  :mod:`mcpool.testing` on a free port;
- its ``memcache_client_lib`` fixture (pylibmc or python-memcached) gives
  ``"pylibmc"``: mcpool runs on pylibmc only;
- cachelib 0.9's ``cache_factory`` fixture flushes through
  ``mc._client.flush_all()``; ``_client`` has that method here, so it runs
  as written.

The other fixtures (``key_prefix``, ``cache_factory``) and every test are
cachelib's own. A version whose tests cannot be had fails, never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from upstream_tests import (
    UpstreamTestsUnavailable,
    fixtures_of,
    load_modules,
    obtain,
    xprocess_stub,
)

from mcpool.cachelib import MemcachedCache
from mcpool.testing import MemcachedServer

#: The address cachelib's tests and fixtures give.
CACHELIB_TEST_ADDRESS = "127.0.0.1:11212"


class SuiteMemcachedCache(MemcachedCache):
    """mcpool's cache, on this module's memcached server."""

    address = ""

    def __init__(self, servers: Any = None, *args: Any, **kwargs: Any) -> None:
        if servers is None or list(servers) == [CACHELIB_TEST_ADDRESS]:
            servers = [self.address]
        kwargs.setdefault("pool_timeout", 30.0)
        kwargs.setdefault("server_timeout", 10.0)
        super().__init__(servers, *args, **kwargs)


#: cachelib's test helpers, in import order; older releases lack some.
HELPERS = ("conftest", "common", "clear", "has", "delete_many_with_prefix")

try:
    VERSION, ROOT = obtain("cachelib")
except UpstreamTestsUnavailable as exc:
    UNAVAILABLE = str(exc)
else:
    UNAVAILABLE = ""

if UNAVAILABLE:

    def test_obtain_cachelib_tests() -> None:
        pytest.fail(UNAVAILABLE, pytrace=False)

else:
    present = [name for name in HELPERS if (ROOT / f"{name}.py").exists()]
    _loaded = load_modules(
        ROOT, [*present, "test_memcached_cache"], {"xprocess": xprocess_stub()}
    )
    _tests = _loaded["test_memcached_cache"]
    _tests.MemcachedCache = SuiteMemcachedCache  # type: ignore[attr-defined]

    # cachelib's fixtures, but the ones replaced below.
    globals().update(
        fixtures_of(
            _loaded["conftest"], ["memcached_server", "redis_server", "valkey_server"]
        )
    )
    globals().update(fixtures_of(_tests, ["memcache_client_lib"]))
    # cachelib's test classes, collected here.
    globals().update(
        {
            name: value
            for name, value in vars(_tests).items()
            if name.startswith("Test") and isinstance(value, type)
        }
    )


@pytest.fixture(scope="module", autouse=True)
def suite_server() -> Iterator[MemcachedServer]:
    """A server of this module's own: cachelib's tests flush it."""
    with MemcachedServer() as server:
        SuiteMemcachedCache.address = server.address
        yield server


@pytest.fixture(scope="class")
def memcached_server(suite_server: MemcachedServer) -> MemcachedServer:
    return suite_server


@pytest.fixture
def memcache_client_lib() -> str:
    return "pylibmc"
