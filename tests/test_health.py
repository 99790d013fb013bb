"""mcpool.health: the verdict a person would be paged on."""

from __future__ import annotations

import threading

import pytest
from test_telemetry import FakeClock, wait_until

from mcpool import Client, ClientPool, Pool, PoolTimeout
from mcpool.health import HealthCheck, check_health
from mcpool.testing import MemcachedServer, free_port


def test_a_quiet_pool_is_healthy() -> None:
    pool: Pool[list[int]] = Pool(list, 2, timings=True)
    with pool.reserve():
        pass
    health = check_health(pool)
    assert health and health.healthy
    assert health.problems == ()
    assert health.timeouts == 0
    assert health.wait_p99 is not None and health.wait_p99 < 0.1


def test_timeouts_in_the_window_make_it_unhealthy_until_the_window_passes() -> None:
    pool: Pool[list[int]] = Pool(list, 1, name="cache")
    check = HealthCheck(pool, max_timeouts=1)
    with pool.reserve():
        for _ in range(2):
            with pytest.raises(PoolTimeout):
                pool.checkout(block=False)
    health = check()
    assert not health
    assert health.timeouts == 2
    assert health.problems == ("cache: 2 reservations timed out (more than 1 allowed)",)
    assert check(), "the next window has no timeouts"


def test_a_slow_p99_wait_in_the_window_is_reported() -> None:
    clock = FakeClock()
    pool: Pool[list[int]] = Pool(list, 1, clock=clock, timings=True, name="cache")
    check = HealthCheck(pool, max_wait_p99=0.1)
    holder = pool.checkout()
    assert check()
    waiter = threading.Thread(target=lambda: pool.checkout(timeout=30).release())
    waiter.start()
    wait_until(lambda: pool.stats().waiting == 1, "the waiter to queue")
    clock.advance(0.4)
    holder.release()
    waiter.join(10)
    health = check()
    assert not health
    assert health.wait_p99 is not None and 0.25 < health.wait_p99 <= 0.5
    assert "cache: 99% of waits for a client took up to" in health.problems[0]
    assert "raise max_size" in health.problems[0]
    assert check().wait_p99 is None, "nothing waited in the next window"


def test_a_closed_pool_is_unhealthy() -> None:
    pool: Pool[list[int]] = Pool(list, 1, name="cache")
    pool.close()
    assert check_health(pool).problems == ("cache: the pool is closed",)


def test_thresholds_must_make_sense() -> None:
    pool: Pool[list[int]] = Pool(list, 1)
    with pytest.raises(ValueError, match="max_wait_p99 must be seconds >= 0"):
        check_health(pool, max_wait_p99=-1)
    with pytest.raises(ValueError, match="max_timeouts must be >= 0"):
        HealthCheck(pool, max_timeouts=-1)


def pool_of_dead_servers(count: int) -> ClientPool[Client]:
    """A pool whose servers refuse connections, known to be down."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(count)]
    pool = ClientPool(Client(addresses, timeout=5), 2, name="cache")
    with pool.reserve() as mc:
        assert mc.get("health:key") is None  # a miss: no server answers
    wait_until(
        lambda: not any(server.available for server in pool.stats().servers),
        "the servers to be found down",
    )
    return pool


def test_every_server_down_is_unhealthy() -> None:
    pool = pool_of_dead_servers(2)
    (problem,) = check_health(pool).problems
    assert problem.startswith("cache: every server is down (127.0.0.1:")


def test_one_server_down_of_two_is_healthy(memcached: MemcachedServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    pool = ClientPool(Client([memcached.address, dead], timeout=5), 2)
    with pool.reserve() as mc:
        for n in range(20):  # some keys land on the dead server
            mc.get(f"health:{n}")
    wait_until(
        lambda: not pool.stats().servers[1].available, "the dead one to be found"
    )
    assert check_health(pool)
