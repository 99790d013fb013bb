"""The generic pool core, with plain objects standing in for resources."""

from __future__ import annotations

import logging
import queue
import random
import re
import threading
import time
from collections.abc import Callable

import pytest

from mcpool import Pool, PoolClosed, PoolError, PoolTimeout


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Resource:
    """A non-thread-safe object that notices being used by two threads."""

    made = 0

    def __init__(self) -> None:
        Resource.made += 1
        self.number = Resource.made
        self._guard = threading.Lock()
        self.overlaps = 0
        self.closed = False
        self.uses = 0

    def use(self, pause: float = 0.0) -> None:
        if not self._guard.acquire(blocking=False):
            self.overlaps += 1
            return
        try:
            if self.closed:
                raise RuntimeError("used after close")
            self.uses += 1
            if pause:
                time.sleep(pause)
        finally:
            self._guard.release()

    def close(self) -> None:
        self.closed = True


def make_pool(max_size: int = 2, **kwargs: object) -> Pool[Resource]:
    return Pool(Resource, max_size, close=Resource.close, **kwargs)  # type: ignore[arg-type]


def assert_accounted(pool: Pool[Resource]) -> None:
    s = pool.stats()
    assert s.size == s.idle + s.in_use == s.created - s.discarded, s


def test_items_are_made_lazily_and_the_latest_returned_is_reused_first() -> None:
    pool = make_pool(3)
    assert pool.stats().created == 0
    with pool.reserve() as a, pool.reserve() as b:
        assert a is not b
    with pool.reserve() as c:
        assert c is a  # b went back first, a last: LIFO hands out a
    s = pool.stats()
    assert (s.created, s.idle, s.in_use, s.reserves) == (2, 2, 0, 3)


def test_exhausted_pool_times_out_with_a_message_that_says_what_to_do() -> None:
    pool = make_pool(1, timeout=0.05, name="ftp")
    with pool.reserve():
        started = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            with pool.reserve():
                pass
        assert time.monotonic() - started >= 0.05
    message = str(info.value)
    assert re.search(r"ftp: couldn't reserve an item after \d+\.\d\d s", message)
    assert "size=1, max_size=1, in_use=1, idle=0, waiting=0" in message
    assert "raise max_size" in message
    assert isinstance(info.value, queue.Empty) and isinstance(info.value, PoolError)
    assert pool.stats().timeouts == 1
    # The pool is intact: the next reservation gets the item.
    with pool.reserve(timeout=0.01) as item:
        item.use()
    assert_accounted(pool)


def test_non_blocking_reserve_raises_queue_empty_at_once() -> None:
    pool = make_pool(1, timeout=60)
    with pool.reserve():
        started = time.monotonic()
        with pytest.raises(queue.Empty, match="block=False"):
            pool.reserve(block=False).__enter__()
        # Not the pool's 60 s: a busy machine may add to "at once", not that.
        assert time.monotonic() - started < 30
    with pool.reserve(block=False) as item:
        assert item.uses == 0


def test_per_call_timeout_overrides_the_pool_default() -> None:
    pool = make_pool(1, timeout=60)
    with pool.reserve():
        with pytest.raises(PoolTimeout, match=r"after \d+\.\d\d s"):
            pool.reserve(timeout=0.02).__enter__()


def test_waiters_are_served_in_arrival_order() -> None:
    pool = make_pool(1, timeout=10)
    order: list[int] = []
    holder = pool.reserve()
    holder.__enter__()
    threads = []
    for n in range(5):
        t = threading.Thread(target=lambda n=n: _take_and_note(pool, order, n))
        t.start()
        threads.append(t)
        _wait_for(lambda n=n: pool.stats().waiting == n + 1)
    holder.__exit__(None, None, None)
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3, 4]
    assert_accounted(pool)


def _take_and_note(pool: Pool[Resource], order: list[int], n: int) -> None:
    with pool.reserve():
        order.append(n)


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


def test_a_timed_out_waiter_never_swallows_an_item() -> None:
    pool = make_pool(1, timeout=0.01)
    holder = pool.reserve()
    holder.__enter__()
    errors = []

    def impatient() -> None:
        try:
            with pool.reserve():
                pass
        except PoolTimeout as exc:
            errors.append(exc)

    threads = [threading.Thread(target=impatient) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    holder.__exit__(None, None, None)
    assert len(errors) == 8
    s = pool.stats()
    assert (s.waiting, s.idle, s.in_use, s.timeouts) == (0, 1, 0, 8)
    with pool.reserve(block=False):
        pass


def test_exclusive_use_under_stress_and_nothing_lost() -> None:
    pool = make_pool(6, timeout=30)
    out: set[int] = set()
    out_lock = threading.Lock()
    doubles: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(64)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(150):
            try:
                with pool.reserve() as item:
                    with out_lock:
                        if id(item) in out:
                            doubles.append(id(item))
                        out.add(id(item))
                    item.use()
                    with out_lock:
                        out.discard(id(item))
                    if rng.random() < 0.1:
                        raise ValueError("the application failed")
            except ValueError:
                pass
            except BaseException as exc:  # noqa: BLE001 - collected for the assert
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not doubles
    s = pool.stats()
    assert s.in_use == 0 and s.waiting == 0
    assert s.size == s.idle + s.in_use == s.created - s.discarded
    assert s.discarded > 0  # the random failures discarded items (the default)
    assert s.size <= 6


def test_discard_on_decides_which_exceptions_break_an_item() -> None:
    pool = make_pool(2, discard_on=lambda exc: isinstance(exc, ConnectionError))
    with pytest.raises(KeyError):
        with pool.reserve() as first:
            raise KeyError("benign")
    with pool.reserve() as again:
        assert again is first
    with pytest.raises(ConnectionError):
        with pool.reserve() as broken:
            raise ConnectionError("broken")
    assert broken.closed
    with pool.reserve() as fresh:
        assert fresh is not broken and not fresh.closed
    assert pool.stats().discarded == 1
    assert_accounted(pool)


def test_max_idle_closes_idle_items_above_min_idle() -> None:
    clock = FakeClock()
    pool = make_pool(4, min_idle=1, max_idle=60, clock=clock)
    assert pool.stats().idle == 1  # min_idle is made up front
    with pool.reserve() as a, pool.reserve() as b, pool.reserve() as c:
        # With all three out, one more is made to keep min_idle idle.
        assert pool.stats().idle == 1
    assert pool.stats().idle == 4
    clock.advance(30)
    with pool.reserve() as d:
        assert d is a  # most recently returned first
    clock.advance(31)  # the others are now idle 61 s; a came back 31 s ago
    assert pool.prune() == 3
    assert b.closed and c.closed and not a.closed
    clock.advance(61)
    assert pool.prune() == 0  # a is the min_idle item: kept
    assert pool.stats().idle == 1
    assert_accounted(pool)


def test_max_lifetime_replaces_an_item_when_it_comes_back() -> None:
    clock = FakeClock()
    pool = make_pool(2, max_lifetime=100, lifetime_jitter=0.0, clock=clock)
    with pool.reserve() as first:
        clock.advance(101)
    assert first.closed
    with pool.reserve() as second:
        assert second is not first
    clock.advance(50)
    with pool.reserve() as third:
        assert third is second
    s = pool.stats()
    assert (s.created, s.discarded) == (2, 1)


def test_max_lifetime_jitter_spreads_expiry() -> None:
    clock = FakeClock()
    pool = make_pool(20, max_lifetime=100, lifetime_jitter=0.5, clock=clock)
    leases = [pool.checkout() for _ in range(20)]
    expiries = {lease._entry._slot.expires_at for lease in leases}  # type: ignore[union-attr]
    for lease in leases:
        lease.release()
    assert len(expiries) > 1
    assert all(clock.now + 50 <= e <= clock.now + 100 for e in expiries)


def test_idle_items_past_their_lifetime_are_not_handed_out() -> None:
    clock = FakeClock()
    pool = make_pool(2, max_lifetime=10, lifetime_jitter=0.0, clock=clock)
    with pool.reserve() as old:
        pass
    clock.advance(11)
    with pool.reserve() as item:
        assert item is not old and old.closed


def test_check_hook_discards_items_that_fail_it() -> None:
    pool = make_pool(2, check=lambda r: r.uses < 2)
    with pool.reserve() as item:
        item.use()
        item.use()
    with pool.reserve() as other:
        assert other is not item
    assert item.closed


def test_reset_hook_runs_on_return_and_a_failing_reset_discards() -> None:
    resets: list[Resource] = []

    def reset(item: Resource) -> None:
        resets.append(item)
        if item.uses:
            raise RuntimeError("rollback failed")

    pool = make_pool(2, reset=reset)
    with pool.reserve() as clean:
        pass
    with pool.reserve() as dirty:
        assert dirty is clean
        dirty.use()
    assert resets == [clean, clean]
    assert dirty.closed
    assert pool.stats().discarded == 1


def test_factory_failure_frees_the_slot_for_the_next_caller() -> None:
    calls = 0

    def flaky() -> Resource:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("server refused")
        return Resource()

    pool = Pool(flaky, 1)
    with pytest.raises(OSError):
        pool.reserve().__enter__()
    assert pool.stats().size == 0
    with pool.reserve() as item:
        assert isinstance(item, Resource)
    s = pool.stats()
    assert (s.created, s.reserves, s.size) == (1, 1, 1)


def test_a_waiter_makes_a_new_item_when_one_is_discarded() -> None:
    pool = make_pool(1, timeout=10)
    holder = pool.checkout()
    got: list[Resource] = []
    t = threading.Thread(target=lambda: got.append(pool.checkout().item))
    t.start()
    _wait_for(lambda: pool.stats().waiting == 1)
    old = holder.item
    holder.release(discard=True)
    t.join(10)
    assert got and got[0] is not old and old.closed


def test_close_wakes_waiters_closes_idle_and_returning_items() -> None:
    pool = make_pool(2, timeout=10)
    with pool.reserve() as idle_one:
        pass
    held = pool.checkout()
    held_too = pool.checkout()
    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            pool.reserve().__enter__()
        except PoolClosed as exc:
            outcome.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    _wait_for(lambda: pool.stats().waiting == 1)
    pool.close()
    t.join(10)
    assert outcome and "closed while waiting" in str(outcome[0])
    assert pool.closed
    assert idle_one.closed or held.item is idle_one
    with pytest.raises(PoolClosed):
        pool.reserve().__enter__()
    item = held.item
    held.release()
    assert item.closed
    held_too.release()
    s = pool.stats()
    assert (s.size, s.idle, s.in_use) == (0, 0, 0)
    pool.close()  # again: nothing happens


def test_lease_release_is_idempotent() -> None:
    pool = make_pool(1)
    lease = pool.checkout()
    item = lease.item
    lease.release()
    lease.release()
    assert lease.released
    with pytest.raises(RuntimeError, match="released"):
        _ = lease.item
    s = pool.stats()
    assert (s.idle, s.in_use) == (1, 0)
    with pool.checkout() as again:
        assert again is item


def test_a_reservation_serves_one_with_block() -> None:
    pool = make_pool(1)
    reservation = pool.reserve()
    with reservation:
        pass
    with pytest.raises(RuntimeError, match="already released"):
        with reservation:
            pass
    assert pool.stats().idle == 1


def test_leaks_are_logged_with_the_reserving_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    pool = make_pool(1, leak_timeout=5, clock=clock, name="leaky")
    leaked = pool.checkout()  # the line the report must name
    clock.advance(6)
    with caplog.at_level(logging.WARNING, logger="mcpool"):
        with pytest.raises(PoolTimeout) as info:
            pool.reserve(timeout=0.01).__enter__()
        pool._leaks.scan()
    assert "longest holders: thread MainThread for 6.00 s" in str(info.value)
    assert "test_pool.py" in str(info.value)
    report = "\n".join(r.getMessage() for r in caplog.records)
    assert "leaky: item held for 6.00 s by thread MainThread" in report
    assert "leaked = pool.checkout()" in report
    with caplog.at_level(logging.WARNING, logger="mcpool"):
        leaked.release()
    assert "came back after 6.00 s" in caplog.records[-1].getMessage()


def test_generic_pool_keeps_a_non_thread_safe_object_to_one_thread() -> None:
    pool = make_pool(3, timeout=30)

    def worker() -> None:
        for _ in range(200):
            with pool.reserve() as item:
                item.use(pause=0.0001)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    items = [e.item for e in pool._idle]
    assert len(items) == 3
    assert sum(i.overlaps for i in items) == 0
    assert sum(i.uses for i in items) == 12 * 200


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_size"):
        Pool(Resource, -1)
    with pytest.raises(ValueError, match="min_idle"):
        Pool(Resource, 2, min_idle=3)
    with pytest.raises(ValueError, match="lifetime_jitter"):
        Pool(Resource, 2, lifetime_jitter=1.5)


@pytest.mark.parametrize("option", ["max_idle", "max_lifetime", "leak_timeout"])
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, ValueError),
        (float("nan"), ValueError),
        ("60", TypeError),
        (True, TypeError),
    ],
)
def test_ages_and_leak_timeouts_must_be_seconds(
    option: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=f"{option} must be a number of seconds"):
        Pool(Resource, 2, **{option: value})  # type: ignore[arg-type]
    # A valid value works, and the refused pool made nothing.
    pool = Pool(Resource, 2, **{option: 60.0})  # type: ignore[arg-type]
    with pool.reserve() as item:
        assert not item.closed
    assert pool.stats().created == 1
    pool.close()


def test_a_forked_child_starts_with_an_empty_pool_and_keeps_it_closed() -> None:
    import os

    pool = make_pool(2)
    with pool.reserve() as parent_item:
        pass
    closed_pool = make_pool(1)
    closed_pool.close()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports over the pipe and leaves at once
        try:
            with pool.reserve() as child_item:
                fresh = child_item is not parent_item
            s = pool.stats()
            report = f"{fresh} {s.created} {closed_pool.closed}"
        except BaseException as exc:  # noqa: BLE001 - sent to the parent
            report = repr(exc)
        os.write(write, report.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        assert pipe.read() == "True 1 True"
    with pool.reserve() as again:
        assert again is parent_item and not parent_item.closed
