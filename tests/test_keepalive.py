"""keepalive: items idle for long are checked before they are handed out."""

from __future__ import annotations

import pylibmc
import pytest

import mcpool
from mcpool import ClientPool, Pool, ThreadMappedPool
from mcpool.testing import MemcachedServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_check_runs_only_on_items_idle_longer_than_keepalive() -> None:
    clock = FakeClock()
    checked: list[object] = []

    def check(item: object) -> bool:
        checked.append(item)
        return True

    pool: Pool[object] = Pool(
        object, max_size=1, check=check, keepalive=10, clock=clock
    )
    with pool.reserve() as first:
        pass
    clock.now += 9
    with pool.reserve() as item:
        assert item is first
    assert checked == []  # used 9 s ago: no round trip
    clock.now += 10
    with pool.reserve() as item:
        assert item is first
    assert checked == [first]


def test_a_failing_keepalive_check_discards_and_counts() -> None:
    clock = FakeClock()
    pool: Pool[object] = Pool(
        object, max_size=1, check=lambda item: False, keepalive=5, clock=clock
    )
    with pool.reserve() as first:
        pass
    clock.now += 5
    with pool.reserve() as second:
        assert second is not first  # made new: a fresh item is never checked
    stats = pool.stats()
    assert stats.discarded == 1 and stats.created == 2 and stats.size == 1


def test_keepalive_needs_a_check() -> None:
    with pytest.raises(ValueError, match="keepalive needs a check hook"):
        Pool(object, keepalive=5)
    with pytest.raises(ValueError, match="keepalive"):
        Pool(object, check=bool, keepalive=-1)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_clientpool_keepalive_replaces_a_client_whose_server_restarted(
    fresh_memcached: MemcachedServer, binary: bool
) -> None:
    clock = FakeClock()
    master = mcpool.Client([fresh_memcached.address], binary=binary, timeout=10)
    pool = ClientPool(master, 1, keepalive=30, clock=clock)
    with pool.reserve() as mc:
        mc.set("k", "v")
    with pool.reserve() as mc:  # not idle long: not checked
        assert mc.get("k") == "v"
    fresh_memcached.restart()
    pylibmc.Client([fresh_memcached.address]).set("k", "after")
    clock.now += 30
    with pool.reserve() as mc:
        # pylibmc's own get, which has no retry: the client is a new one.
        assert pylibmc.Client.get(mc, "k") == "after"
    assert pool.stats().discarded == 1
    pool.close()


def test_the_check_keeps_a_client_with_a_server_on_record_as_failed(
    fresh_memcached_group: list[MemcachedServer],
) -> None:
    servers = fresh_memcached_group
    master = mcpool.Client([s.address for s in servers], timeout=10)
    pool = ClientPool(master, 1, keepalive=0)
    assert len(pool._probe_keys()) == 3
    with pool.reserve() as mc:
        assert pool.answers(mc)
        servers[1].kill()
        # Its connection broke; once the client has the server on record as
        # failed (after one failure on libmemcached 1.0.16, two on 1.1.4),
        # the check keeps it.
        assert [pool.answers(mc) for _ in range(3)] in (
            [False, True, True],
            [False, False, True],
        )
    pool.close()


def test_threadmappedpool_takes_keepalive(memcached: MemcachedServer) -> None:
    pool = ThreadMappedPool(pylibmc.Client([memcached.address]), keepalive=60)
    assert pool.keepalive == 60
    with pool.reserve() as mc:
        assert pool.answers(mc)
    pool.close()
