"""max_waiting: an overloaded pool refuses at once instead of queueing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pylibmc
import pytest

from mcpool import (
    ClientPool,
    Pool,
    PoolError,
    PoolTimeout,
    ThreadMappedPool,
    TooManyRequests,
)
from mcpool.testing import MemcachedServer


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Poll *condition* until it holds; the deadline only catches a hang."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_one_caller_more_than_max_waiting_is_refused_at_once() -> None:
    pool: Pool[list[int]] = Pool(list, max_size=2, max_waiting=8, timeout=60)
    held = [pool.checkout(), pool.checkout()]
    outcomes: list[str] = []
    record = threading.Lock()

    def request() -> None:
        try:
            with pool.reserve() as item:
                item.append(1)
            outcome = "served"
        except TooManyRequests:
            outcome = "refused"
        with record:
            outcomes.append(outcome)

    threads = [threading.Thread(target=request) for _ in range(64)]
    for thread in threads:
        thread.start()
    # Every thread is either in line or already refused; the refused ones
    # returned without waiting for the items held here.
    wait_for(
        lambda: pool.stats().waiting + outcomes.count("refused") == 64,
        "64 callers to queue or be refused",
    )
    assert pool.stats().waiting == 8
    assert outcomes.count("refused") == 56
    for lease in held:
        lease.release()
    for thread in threads:
        thread.join(60)
    assert outcomes.count("served") == 8
    stats = pool.stats()
    assert stats.rejected == 56
    assert stats.size <= 2 and stats.in_use == 0 and stats.waiting == 0
    assert stats.timeouts == 0


def test_the_refusal_says_what_happened_and_what_to_change() -> None:
    pool: Pool[object] = Pool(object, max_size=1, max_waiting=0, name="cache")
    with pool.reserve():
        with pytest.raises(TooManyRequests) as info:
            with pool.reserve():
                pass
    message = str(info.value)
    assert "cache" in message
    assert "max_waiting=0" in message
    assert "max_size=1" in message and "in_use=1" in message
    assert "raise max_size" in message and "raise max_waiting" in message
    assert isinstance(info.value, PoolError)
    assert type(info.value).__module__ == "mcpool"
    # Nothing was lost: the item comes back and serves the next caller.
    with pool.reserve(timeout=5):
        pass
    assert pool.stats().rejected == 1


def test_block_false_still_raises_pool_timeout() -> None:
    pool: Pool[object] = Pool(object, max_size=1, max_waiting=0)
    with pool.reserve():
        with pytest.raises(PoolTimeout):
            with pool.reserve(block=False):
                pass
    assert pool.stats().rejected == 0


def test_a_refusal_while_items_are_free_never_happens() -> None:
    pool: Pool[object] = Pool(object, max_size=3, max_waiting=0)
    with pool.reserve(), pool.reserve(), pool.reserve():
        pass
    assert pool.stats().rejected == 0


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_max_waiting_must_be_a_whole_number(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_waiting"):
        Pool(object, max_waiting=value)


def test_clientpool_bounds_its_line(memcached: MemcachedServer) -> None:
    pool = ClientPool(pylibmc.Client([memcached.address]), 1, max_waiting=1)
    assert pool.max_waiting == 1
    lease = pool.checkout()

    def wait_in_line() -> None:
        with pool.reserve(timeout=60) as mc:
            mc.set("overload", "1")

    waiting = threading.Thread(target=wait_in_line)
    waiting.start()
    wait_for(lambda: pool.stats().waiting == 1, "a caller in line")
    with pytest.raises(TooManyRequests):
        pool.checkout()
    lease.release()
    waiting.join(60)
    pool.close()


def test_threadmappedpool_bounds_its_line(memcached: MemcachedServer) -> None:
    pool = ThreadMappedPool(pylibmc.Client([memcached.address]), 1, max_waiting=1)
    outcomes: list[str] = []
    done = threading.Event()

    def bind_and_hold() -> None:
        with pool.reserve(timeout=60) as mc:
            mc.set("overload", "1")
        outcomes.append("served")
        pool.relinquish()
        done.set()

    with pool.reserve():
        waiting = threading.Thread(target=bind_and_hold)
        waiting.start()
        wait_for(lambda: pool.stats().waiting == 1, "a thread in line")

        def refused() -> None:
            try:
                with pool.reserve(timeout=60):
                    pass
            except TooManyRequests:
                outcomes.append("refused")

        other = threading.Thread(target=refused)
        other.start()
        other.join(60)
        assert outcomes == ["refused"]
    pool.relinquish()
    waiting.join(60)
    assert done.is_set() and outcomes == ["refused", "served"]
    assert pool.stats().rejected == 1
    pool.close()
