"""Flask-Caching's own memcached tests, unchanged, on mcpool.cachelib.MemcachedCache.

The test files come from the sdist of the installed Flask-Caching
(``upstream_tests.py``): the ``TestMemcachedCache`` class of
``test_backend_cache.py`` and the memcached case of ``test_init.py``'s
``test_init_nullcache``. What is swapped, and nothing else:

- ``flask_caching.backends.MemcachedCache``, which the tests build directly
  or through ``CACHE_TYPE = "flask_caching.backends.MemcachedCache"``, is a
  subclass of :class:`mcpool.cachelib.MemcachedCache` that sends the address
  the tests use (``127.0.0.1:11212``, or none) to a memcached of this
  suite's, with generous timeouts for a loaded machine;
- Flask-Caching's ``memcache_server`` fixture (memcached through
  pytest-xprocess on port 11212) is one that starts a server from
  :mod:`mcpool.testing` on a free port.

The other fixtures (``app``, ``clock``...) and the tests are Flask-Caching's.
pytest 9's deprecation warning for the way Flask-Caching 2.0 declares a
class-scoped fixture is let through in this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask_caching.backends
import pytest
from flask import Flask
from upstream_tests import (
    UpstreamTestsUnavailable,
    fixtures_of,
    load_modules,
    obtain,
    xprocess_stub,
)

from mcpool.cachelib import MemcachedCache
from mcpool.testing import MemcachedServer

# Flask-Caching 2.0's TestMemcachedCache declares its class-scoped
# "requirements" fixture as an instance method, which pytest 9 deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Class-scoped fixtures defined as instance methods are deprecated"
)

#: The address Flask-Caching's tests give.
FLASK_CACHING_TEST_ADDRESS = "127.0.0.1:11212"


class SuiteMemcachedCache(MemcachedCache):
    """mcpool's cache, on this module's memcached server."""

    address = ""

    def __init__(self, servers: Any = None, *args: Any, **kwargs: Any) -> None:
        if servers is None or list(servers) == [FLASK_CACHING_TEST_ADDRESS]:
            servers = [self.address]
        kwargs.setdefault("pool_timeout", 30.0)
        kwargs.setdefault("server_timeout", 10.0)
        super().__init__(servers, *args, **kwargs)


# The name is SuiteMemcachedCache's own: test_init builds CACHE_TYPE from it.
SuiteMemcachedCache.__name__ = SuiteMemcachedCache.__qualname__ = "MemcachedCache"

try:
    VERSION, ROOT = obtain("flask-caching")
except UpstreamTestsUnavailable as exc:
    UNAVAILABLE = str(exc)
else:
    UNAVAILABLE = ""

if UNAVAILABLE:

    def test_obtain_flask_caching_tests() -> None:
        pytest.fail(UNAVAILABLE, pytrace=False)

else:
    _stock = flask_caching.backends.MemcachedCache
    # test_init binds the class at import time: import it with the swap in place.
    flask_caching.backends.MemcachedCache = SuiteMemcachedCache  # type: ignore[misc]
    try:
        _loaded = load_modules(
            ROOT,
            ["conftest", "test_backend_cache", "test_init"],
            {"xprocess": xprocess_stub()},
        )
    finally:
        flask_caching.backends.MemcachedCache = _stock  # type: ignore[misc]
    globals().update(
        fixtures_of(
            _loaded["conftest"],
            ["memcache_server", "redis_server", "xprocess"],
        )
    )
    TestMemcachedCache = _loaded["test_backend_cache"].TestMemcachedCache

    def test_init_nullcache_memcached(tmp_path: Path) -> None:
        """``test_init_nullcache`` with its ``MemcachedCache`` parameter, on
        an app made as the module's ``app`` fixture makes it."""
        init_tests = _loaded["test_init"]
        assert init_tests.MemcachedCache is SuiteMemcachedCache
        init_tests.test_init_nullcache(SuiteMemcachedCache, Flask(__name__), tmp_path)


@pytest.fixture(scope="module", autouse=True)
def suite_server() -> Iterator[MemcachedServer]:
    """A server of this module's own, and the swap, for the module's tests."""
    with MemcachedServer() as server:
        SuiteMemcachedCache.address = server.address
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(flask_caching.backends, "MemcachedCache", SuiteMemcachedCache)
            yield server


@pytest.fixture(scope="class")
def memcache_server(suite_server: MemcachedServer) -> MemcachedServer:
    return suite_server
