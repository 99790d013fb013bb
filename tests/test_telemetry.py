"""Pool timings (histograms in stats()), pool events, and default names."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import pylibmc
import pytest

from mcpool import ClientPool, Histogram, Pool, PoolListener, PoolTimeout
from mcpool.histogram import BUCKETS
from mcpool.testing import MemcachedServer


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder(PoolListener):
    """Records every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_create(self, pool: Any, seconds: float) -> None:
        self.events.append(("create", round(seconds, 6)))

    def on_reserve(self, pool: Any, waited: float) -> None:
        self.events.append(("reserve", round(waited, 6)))

    def on_release(self, pool: Any, used: float) -> None:
        self.events.append(("release", round(used, 6)))

    def on_discard(self, pool: Any, reason: str) -> None:
        self.events.append(("discard", reason))

    def on_timeout(self, pool: Any) -> None:
        self.events.append(("timeout",))

    def on_wait(self, pool: Any) -> None:
        self.events.append(("wait",))

    def on_fork_reset(self, pool: Any) -> None:
        self.events.append(("fork_reset",))


def slow_factory(clock: FakeClock, seconds: float) -> Any:
    def make() -> list[int]:
        clock.advance(seconds)
        return []

    return make


def wait_until(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_timings_are_off_by_default() -> None:
    pool: Pool[list[int]] = Pool(list, max_size=1)
    with pool.reserve():
        pass
    stats = pool.stats()
    assert stats.wait_time is None and stats.use_time is None
    assert stats.create_time is None
    assert stats.wait_p50 is None and stats.use_p99 is None


def test_timings_record_create_wait_and_use_times() -> None:
    clock = FakeClock()
    pool = Pool(slow_factory(clock, 0.002), max_size=2, clock=clock, timings=True)
    with pool.reserve():  # made: waits for the factory
        clock.advance(0.03)
    with pool.reserve():  # idle: no wait
        clock.advance(0.3)
    stats = pool.stats()
    assert stats.create_time is not None and stats.wait_time is not None
    assert stats.use_time is not None
    assert stats.create_time.count == 1
    assert stats.create_time.sum == pytest.approx(0.002)
    assert stats.wait_time.count == 2
    assert stats.wait_time.sum == pytest.approx(0.002)
    assert stats.use_time.counts[BUCKETS.index(0.05)] == 1  # 0.03 s
    assert stats.use_time.counts[BUCKETS.index(0.5)] == 1  # 0.3 s
    assert stats.use_time.sum == pytest.approx(0.33)
    assert stats.wait_p50 is not None and 0 <= stats.wait_p50 <= 0.0025
    assert stats.use_p99 is not None and 0.25 < stats.use_p99 <= 0.5


def test_a_waiters_wait_is_timed_from_its_reserve_to_its_item() -> None:
    clock = FakeClock()
    pool: Pool[list[int]] = Pool(list, max_size=1, clock=clock, timings=True)
    holder = pool.checkout()
    got = threading.Event()

    def waiter() -> None:
        with pool.reserve(timeout=30):
            got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: pool.stats().waiting == 1, "the waiter to queue")
    clock.advance(0.7)
    holder.release()
    thread.join(10)
    assert got.is_set()
    wait_time = pool.stats().wait_time
    assert wait_time is not None
    assert wait_time.count == 2
    assert wait_time.sum == pytest.approx(0.7)
    assert wait_time.counts[BUCKETS.index(1.0)] == 1


def test_pop_stats_resets_the_timings_but_not_the_counters() -> None:
    clock = FakeClock()
    pool: Pool[list[int]] = Pool(list, max_size=1, clock=clock, timings=True)
    with pool.reserve():
        clock.advance(0.01)
    popped = pool.pop_stats()
    assert popped.use_time is not None and popped.use_time.count == 1
    after = pool.stats()
    assert after.use_time is not None and after.use_time.count == 0
    assert after.wait_p99 is None
    assert after.reserves == 1 and after.created == 1


def test_histograms_subtract_into_a_window() -> None:
    early = Histogram((0.1, 1.0), (1, 0, 0), 0.05)
    late = Histogram((0.1, 1.0), (1, 3, 1), 3.0)
    window = late - early
    assert window.counts == (0, 3, 1)
    assert window.count == 4
    assert window.quantile(0.5) == pytest.approx(0.1 + 0.9 * 2 / 3)
    assert window.quantile(1.0) == 1.0  # the unbounded bucket
    with pytest.raises(ValueError, match="q must be within 0..1"):
        window.quantile(99)


def test_listeners_see_each_event_once_in_order() -> None:
    clock = FakeClock()
    pool = Pool(slow_factory(clock, 0.002), max_size=1, clock=clock)
    recorder = Recorder()
    pool.add_listener(recorder)
    with pool.reserve():
        clock.advance(0.01)
        with pytest.raises(PoolTimeout):
            with pool.reserve(block=False):
                pass  # pragma: no cover
    with pytest.raises(KeyError):
        with pool.reserve():
            clock.advance(0.02)
            raise KeyError("broken")
    with pool.reserve():
        pass
    pool.close()
    assert recorder.events == [
        ("create", 0.002),
        ("reserve", 0.002),
        ("timeout",),
        ("release", 0.01),
        ("reserve", 0.0),
        ("discard", "broken"),
        ("release", 0.02),
        ("create", 0.002),
        ("reserve", 0.002),
        ("release", 0.0),
        ("discard", "closed"),
    ]


def test_discard_reasons_name_the_cause() -> None:
    clock = FakeClock()
    recorder = Recorder()
    refuse = {"check": False, "reset": False}

    def reset(item: list[int]) -> None:
        if refuse["reset"]:
            raise RuntimeError("cannot reset")

    pool: Pool[list[int]] = Pool(
        list,
        max_size=3,
        max_spare=1,
        max_lifetime=60,
        lifetime_jitter=0,
        clock=clock,
        check=lambda item: not refuse["check"],
        reset=reset,
    )
    pool.add_listener(recorder)
    first, second = pool.checkout(), pool.checkout()
    first.release()
    second.release()  # two idle, max_spare=1
    refuse["reset"] = True
    with pool.reserve():
        pass
    refuse["reset"] = False
    with pool.reserve():
        refuse["check"] = True
    with pool.reserve():  # the idle one fails its check; a new one is made
        refuse["check"] = False
        clock.advance(61)  # past max_lifetime when it comes back
    with pool.reserve():
        clock.advance(61)  # made after the advance above: ages while held
    with pool.reserve():
        pass
    clock.advance(61)
    with pool.reserve():  # the idle one is past max_lifetime when taken
        pass
    reasons = [event[1] for event in recorder.events if event[0] == "discard"]
    assert reasons == ["spare", "reset", "check", "aged", "aged", "aged"]


def test_a_listener_that_raises_is_logged_and_the_pool_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(PoolListener):
        def on_reserve(self, pool: Any, waited: float) -> None:
            raise RuntimeError("listener bug")

    pool: Pool[list[int]] = Pool(list, max_size=1)
    pool.add_listener(Broken())
    with caplog.at_level(logging.WARNING, logger="mcpool"):
        with pool.reserve() as item:
            item.append(1)
    assert "listener" in caplog.text and "listener bug" in caplog.text
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.reserves) == (1, 0, 1)


def test_removed_listeners_hear_nothing_more() -> None:
    pool: Pool[list[int]] = Pool(list, max_size=1)
    recorder = Recorder()
    pool.add_listener(recorder)
    pool.remove_listener(recorder)
    with pool.reserve():
        pass
    assert recorder.events == []
    with pytest.raises(ValueError):
        pool.remove_listener(recorder)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_reports_the_fork_reset_and_starts_its_timings_afresh() -> None:
    pool: Pool[list[int]] = Pool(list, max_size=1, timings=True)
    recorder = Recorder()
    pool.add_listener(recorder)
    with pool.reserve():
        pass
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            wait_time = pool.stats().wait_time
            ok = recorder.events[-1] == ("fork_reset",) and (
                wait_time is not None and wait_time.count == 0
            )
            os.write(write_end, b"ok" if ok else repr(recorder.events).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        answer = reader.read()
    os.waitpid(pid, 0)
    assert answer == b"ok"


def test_pools_are_named_after_their_servers_or_factory(
    memcached_group: list[MemcachedServer],
) -> None:
    addresses = [server.address for server in memcached_group[:2]]
    pool = ClientPool(pylibmc.Client(addresses), 2)
    assert pool.name == ",".join(addresses)
    assert ClientPool(pylibmc.Client(addresses), 2).name == pool.name
    assert ClientPool(pylibmc.Client(addresses), 2, name="cache").name == "cache"
    assert Pool(list).name == "Pool(list)"
    assert Pool(lambda: 1).name == "Pool"


def test_listeners_see_the_pool_as_each_event_left_it() -> None:
    pool: Pool[list[int]] = Pool(list, max_size=1)
    seen: list[tuple[str, tuple[int, int, int]]] = []

    class Usage(PoolListener):
        def on_reserve(self, pool: Any, waited: float) -> None:
            seen.append(("reserve", pool.usage()))

        def on_wait(self, pool: Any) -> None:
            seen.append(("wait", pool.usage()))

        def on_release(self, pool: Any, used: float) -> None:
            seen.append(("release", pool.usage()))

    pool.add_listener(Usage())
    holder = pool.checkout()
    assert seen == [("reserve", (0, 1, 0))]
    served, go = threading.Event(), threading.Event()

    def waiter() -> None:
        with pool.reserve(timeout=30):
            served.set()
            go.wait(30)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: ("wait", (0, 1, 1)) in seen, "the waiter to queue")
    holder.release()  # straight to the waiter: still in use, nobody waits
    assert served.wait(10)
    assert ("release", (0, 1, 0)) in seen
    assert seen.count(("reserve", (0, 1, 0))) == 2
    go.set()
    thread.join(10)
    assert seen[-1] == ("release", (1, 0, 0))
