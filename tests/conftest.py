"""Shared fixtures: real memcached servers on free loopback ports."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pylibmc
import pytest

from mcpool import ClientPool, Reservation
from mcpool.testing import INSTALL_HINT, MemcachedServer, Twemproxy, memcached_servers


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
def twemproxy(
    fresh_memcached_group: list[MemcachedServer],
) -> Iterator[Twemproxy]:
    """twemproxy (ketama, auto_eject_hosts) in front of three servers of the
    test's own."""
    with Twemproxy(fresh_memcached_group) as proxy:
        yield proxy


@pytest.fixture
def master(memcached: MemcachedServer) -> pylibmc.Client:
    """A master client for the session server."""
    return pylibmc.Client([memcached.address], binary=True)


class CountingPool:
    """Wraps a pool to count reserves and how often each reservation's
    ``__exit__`` runs (a second exit does nothing, so the pool's stats cannot
    tell)."""

    def __init__(self, pool: ClientPool) -> None:
        self.pool = pool
        self.checkouts = 0
        self.releases = 0

    def reserve(
        self, block: bool = True, timeout: float | None = None
    ) -> _CountingReservation:
        self.checkouts += 1
        return _CountingReservation(self, self.pool.reserve(block, timeout))


class _CountingReservation:
    def __init__(self, owner: CountingPool, reservation: Reservation[Any]) -> None:
        self.owner = owner
        self.reservation = reservation

    def __enter__(self) -> Any:
        return self.reservation.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        self.owner.releases += 1
        self.reservation.__exit__(*exc_info)


@pytest.fixture
def count_releases() -> Callable[[ClientPool], CountingPool]:
    """Wrap a pool in a :class:`CountingPool`, for the WSGI and Flask tests."""
    return CountingPool
