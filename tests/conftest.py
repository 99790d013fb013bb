"""Shared fixtures: real memcached servers on free loopback ports."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pylibmc
import pytest

from mcpool import ClientPool, Lease
from mcpool.testing import INSTALL_HINT, MemcachedServer, memcached_servers


def pytest_sessionstart(session: pytest.Session) -> None:
    # Fail loudly, never skip: a suite that skips every integration test
    # because the server is missing would pass while proving nothing.
    if shutil.which("memcached") is None:
        raise pytest.UsageError(INSTALL_HINT)


@pytest.fixture(scope="session")
def memcached() -> Iterator[MemcachedServer]:
    """One memcached server for the whole session; tests use their own keys."""
    with MemcachedServer() as server:
        yield server


@pytest.fixture
def fresh_memcached() -> Iterator[MemcachedServer]:
    """A memcached server of the test's own, for tests that count connections
    or signal the process."""
    with MemcachedServer() as server:
        yield server


@pytest.fixture(scope="session")
def memcached_group() -> Iterator[list[MemcachedServer]]:
    """Three servers, for multi-server tests."""
    with memcached_servers(3) as servers:
        yield servers


@pytest.fixture
def fresh_memcached_group() -> Iterator[list[MemcachedServer]]:
    """Three servers of the test's own, for failover tests that kill or pause
    one of them."""
    with memcached_servers(3) as servers:
        yield servers


@pytest.fixture
def master(memcached: MemcachedServer) -> pylibmc.Client:
    """A master client for the session server."""
    return pylibmc.Client([memcached.address], binary=True)


class CountingPool:
    """Wraps a pool to count checkouts and how often each lease is released
    (a lease's release is idempotent, so the pool's stats cannot tell)."""

    def __init__(self, pool: ClientPool) -> None:
        self.pool = pool
        self.checkouts = 0
        self.releases = 0

    def checkout(self, block: bool = True, timeout: float | None = None) -> Any:
        self.checkouts += 1
        return _CountingLease(self, self.pool.checkout(block, timeout))


class _CountingLease:
    def __init__(self, owner: CountingPool, lease: Lease[Any]) -> None:
        self.owner = owner
        self.lease = lease

    @property
    def item(self) -> Any:
        return self.lease.item

    def release(self, discard: bool = False, exc: BaseException | None = None) -> None:
        self.owner.releases += 1
        self.lease.release(discard, exc)


@pytest.fixture
def count_releases() -> Callable[[ClientPool], CountingPool]:
    """Wrap a pool in a :class:`CountingPool`, for the WSGI and Flask tests."""
    return CountingPool
