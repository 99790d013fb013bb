"""The core's *max_spare*: a bound on idle items, by count."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pylibmc
import pytest

from mcpool import ClientPool, Pool
from mcpool.testing import MemcachedServer


class Item:
    made = 0

    def __init__(self) -> None:
        Item.made += 1
        self.number = Item.made
        self.closed = False


def close(item: Item) -> None:
    item.closed = True


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def test_items_beyond_max_spare_are_closed_least_recently_used_first() -> None:
    pool = Pool(Item, max_size=5, max_spare=2, close=close)
    leases = [pool.checkout() for _ in range(4)]
    items = [lease.item for lease in leases]
    for lease in leases:
        lease.release()
    # Returned in order 0..3: the two returned first are the least recently
    # used and are closed; the two returned last stay idle.
    assert [item.closed for item in items] == [True, True, False, False]
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.created, stats.discarded) == (2, 0, 4, 2)
    assert stats.size == stats.created - stats.discarded
    # The pool goes on normally: the most recently returned item comes first.
    with pool.reserve() as item:
        assert item is items[3]
    assert pool.stats().idle == 2


def test_max_spare_zero_closes_every_returning_item() -> None:
    pool = Pool(Item, max_size=2, max_spare=0, close=close)
    with pool.reserve() as first:
        pass
    assert first.closed
    with pool.reserve() as second:
        assert second is not first
    stats = pool.stats()
    assert (stats.idle, stats.created, stats.discarded) == (0, 2, 2)


def test_a_returning_item_goes_to_a_waiter_even_with_no_spares() -> None:
    pool = Pool(Item, max_size=1, max_spare=0, close=close)
    lease = pool.checkout()
    got: list[Item] = []

    def wait_for_item() -> None:
        with pool.reserve(timeout=30) as item:
            got.append(item)

    waiter = threading.Thread(target=wait_for_item)
    waiter.start()
    wait_until(lambda: pool.stats().waiting == 1)
    item = lease.item
    lease.release()
    waiter.join()
    assert got == [item]
    # Handed over, not closed; closed only when it came back with no waiter.
    assert item.closed
    stats = pool.stats()
    assert (stats.idle, stats.created, stats.discarded, stats.waits) == (0, 1, 1, 1)


def test_max_spare_below_min_idle_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_spare must be >= min_idle"):
        Pool(Item, max_size=4, min_idle=2, max_spare=1)


def test_no_max_spare_keeps_every_item() -> None:
    pool = Pool(Item, max_size=4, close=close)
    leases = [pool.checkout() for _ in range(4)]
    for lease in leases:
        lease.release()
    assert pool.stats().idle == 4


def test_client_pool_takes_max_spare(memcached: MemcachedServer) -> None:
    pool = ClientPool(pylibmc.Client([memcached.address]), 4, max_spare=1)
    leases = [pool.checkout() for _ in range(3)]
    for number, lease in enumerate(leases):
        assert lease.item.set(f"spare:{number}", number)
        lease.release()
    stats = pool.stats()
    assert (stats.idle, stats.created, stats.discarded) == (1, 3, 2)
    with pool.reserve() as mc:
        assert mc.get("spare:2") == 2
