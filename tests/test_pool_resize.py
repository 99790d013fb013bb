"""resize() and drain() while threads hold items: nothing lost, no item
handed to two holders, the size bound held, no request failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pylibmc
import pytest

import mcpool
from mcpool import ClientPool, Pool, ThreadMappedPool
from mcpool.testing import MemcachedServer, server_stats


class Tracked:
    """An item that notices a second holder and use after close."""

    def __init__(self, census: Census) -> None:
        self.census = census
        self.guard = threading.Lock()
        self.closed = False
        self.faults: list[str] = []

    def use(self) -> None:
        if not self.guard.acquire(blocking=False):
            self.faults.append("two holders")
            return
        try:
            if self.closed:
                self.faults.append("used after close")
            time.sleep(0)  # let another thread run mid-use
        finally:
            self.guard.release()


class Census:
    """The factory and close hook: counts items alive, remembers the most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[Tracked] = []
        self.alive = 0
        self.most_alive = 0

    def make(self) -> Tracked:
        item = Tracked(self)
        with self.lock:
            self.items.append(item)
            self.alive += 1
            self.most_alive = max(self.most_alive, self.alive)
        return item

    def close(self, item: Tracked) -> None:
        item.closed = True
        with self.lock:
            self.alive -= 1

    def faults(self) -> list[str]:
        return [fault for item in self.items for fault in item.faults]


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def make_pool(census: Census, size: int) -> Pool[Tracked]:
    return Pool(census.make, max_size=size, close=census.close, timeout=60)


def test_drain_closes_idle_items_now_and_held_ones_as_they_return() -> None:
    census = Census()
    pool = make_pool(census, 4)
    held = [pool.checkout() for _ in range(3)]
    lease = pool.checkout()
    idle = lease.item
    lease.release()
    old = [lease.item for lease in held]
    pool.drain()
    assert idle.closed
    assert not any(item.closed for item in old)  # their holders still use them
    for lease in held:
        lease.item.use()
        lease.release()
    assert all(item.closed for item in old)
    with pool.reserve() as item:
        assert item not in old and item is not idle
    stats = pool.stats()
    assert stats.size == 1 and stats.in_use == 0
    assert census.alive == 1 and census.faults() == []


def test_resize_down_closes_idle_now_and_busy_on_return() -> None:
    census = Census()
    pool = make_pool(census, 4)
    held = [pool.checkout() for _ in range(3)]
    lease = pool.checkout()
    spare = lease.item
    lease.release()
    pool.resize(1)
    assert pool.stats().size == 3 and spare.closed
    held[0].release()
    held[1].release()
    assert pool.stats().size == 1  # both went: still above the bound
    held[2].release()
    stats = pool.stats()
    assert stats.size == 1 and stats.idle == 1 and pool.max_size == 1
    assert census.alive == 1


def test_resize_up_serves_waiters_at_once() -> None:
    census = Census()
    pool = make_pool(census, 2)
    held = [pool.checkout(), pool.checkout()]
    served = threading.Semaphore(0)
    release = threading.Event()

    def wait_in_line() -> None:
        with pool.reserve() as item:
            item.use()
            served.release()
            release.wait(60)

    threads = [threading.Thread(target=wait_in_line) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: pool.stats().waiting == 3, "three callers in line")
    pool.resize(5)
    for _ in range(3):  # served while the first two items are still held
        assert served.acquire(timeout=60)
    release.set()
    for thread in threads:
        thread.join(60)
    for lease in held:
        lease.release()
    stats = pool.stats()
    assert stats.size == 5 and stats.in_use == 0 and stats.timeouts == 0


@pytest.mark.parametrize("change", ["drain", "shrink", "grow"])
def test_resize_and_drain_under_load(change: str) -> None:
    census = Census()
    pool = make_pool(census, 6)
    stop = threading.Event()
    errors: list[BaseException] = []
    rounds = [0] * 12

    def work(index: int) -> None:
        try:
            while not stop.is_set():
                with pool.reserve() as item:
                    item.use()
                rounds[index] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    wait_for(lambda: min(rounds) > 20, "every thread to get going")
    before = list(census.items)
    for _ in range(5):
        if change == "drain":
            pool.drain()
        elif change == "shrink":
            pool.resize(2)
            pool.resize(6)
        else:
            pool.resize(9)
            pool.resize(3)
        start = list(rounds)
        wait_for(
            lambda start=start: all(
                r > s + 5 for r, s in zip(rounds, start, strict=True)
            ),
            "every thread to use the pool again",
        )
    stop.set()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert census.faults() == []
    assert census.most_alive <= 9 if change == "grow" else census.most_alive <= 6
    stats = pool.stats()
    assert stats.in_use == 0 and stats.size == census.alive <= pool.max_size
    if change == "drain":
        assert all(item.closed for item in before)
    pool.close()
    assert census.alive == 0


def test_bad_sizes_are_refused() -> None:
    pool: Pool[object] = Pool(object, max_size=4, min_idle=2)
    with pytest.raises(TypeError, match="max_size"):
        pool.resize(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_idle"):
        pool.resize(1)
    with pytest.raises(ValueError, match=">= 1"):
        Pool(object).resize(0)


def test_replace_master_moves_a_clientpool_to_new_servers_under_load(
    memcached_group: list[MemcachedServer],
) -> None:
    old, new = memcached_group[0], memcached_group[1]
    pool = ClientPool(mcpool.Client([old.address], timeout=10), 4, timeout=60)
    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0] * 8

    def work(index: int) -> None:
        try:
            while not stop.is_set():
                with pool.reserve() as mc:
                    key = f"replace:{index}"
                    assert mc.set(key, index)
                    assert mc.get(key) == index
                done[index] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    wait_for(lambda: min(done) > 5, "every thread to get going")
    pool.replace_master(mcpool.Client([new.address], timeout=10))
    start = list(done)
    wait_for(
        lambda: all(d > s + 5 for d, s in zip(done, start, strict=True)), "more rounds"
    )
    stop.set()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with pool.reserve() as mc:
        assert mc.set("replace:probe", "new")
    assert pylibmc.Client([new.address]).get("replace:probe") == "new"
    assert pylibmc.Client([old.address]).get("replace:probe") is None
    # Every clone of the old master was closed: the old server sees no
    # connection from the pool (only the one this check opens).
    wait_for(
        lambda: int(server_stats(old.host, old.port)["curr_connections"]) <= 2,
        "the old server's connections to close",
    )
    pool.close()


def test_threadmappedpool_drain_replaces_a_threads_client_at_its_next_reserve(
    memcached: MemcachedServer,
) -> None:
    pool = ThreadMappedPool(pylibmc.Client([memcached.address]))
    with pool.reserve() as first:
        pool.drain()
        with pool.reserve() as nested:
            assert nested is first  # in use by this thread's block: kept
    with pool.reserve() as second:
        assert second is not first
    stats = pool.stats()
    assert stats.size == 1 and stats.discarded == 1
    pool.close()
