"""Shared fixtures: real memcached servers on free loopback ports."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pylibmc
import pytest

from mcpool.testing import INSTALL_HINT, MemcachedServer


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
    servers = [MemcachedServer() for _ in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def fresh_memcached_group() -> Iterator[list[MemcachedServer]]:
    """Three servers of the test's own, for failover tests that kill or pause
    one of them."""
    servers = [MemcachedServer() for _ in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def master(memcached: MemcachedServer) -> pylibmc.Client:
    """A master client for the session server."""
    return pylibmc.Client([memcached.address], binary=True)
