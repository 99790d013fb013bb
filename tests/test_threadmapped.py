"""ThreadMappedPool against real memcached servers."""

from __future__ import annotations

import _thread
import http.client
import json
import subprocess
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pylibmc
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from mcpool import (
    GreenThreadsWarning,
    Lease,
    PoolClosed,
    PoolMiddleware,
    PoolTimeout,
    Reservation,
    ThreadMappedPool,
)
from mcpool.testing import MemcachedServer


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def in_thread(work: Callable[[], Any]) -> Any:
    """Run *work* in a new thread that ends afterwards; return its result."""
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(work())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


@pytest.fixture
def pool(master: pylibmc.Client) -> Iterator[ThreadMappedPool]:
    pool = ThreadMappedPool(master, max_spare=4)
    yield pool
    pool.close()


def assert_accounted(pool: ThreadMappedPool) -> None:
    stats = pool.stats()
    assert stats.idle + stats.in_use == stats.created - stats.discarded == stats.size


# -- one thread ---------------------------------------------------------


def test_reserve_gives_a_working_clone(
    pool: ThreadMappedPool, master: pylibmc.Client
) -> None:
    with pool.reserve() as mc:
        assert mc is not master
        assert mc.set("tm:clone", "value")
        assert mc.get("tm:clone") == "value"


def test_nested_reserve_yields_the_same_client(pool: ThreadMappedPool) -> None:
    with pool.reserve() as outer:
        with pool.reserve() as inner:
            with pool.reserve() as innermost:
                assert inner is outer
                assert innermost is outer
        assert outer.set("tm:nested", 1)
    stats = pool.stats()
    assert (stats.created, stats.in_use, stats.reserves) == (1, 1, 1)


def test_a_thread_keeps_its_client_between_blocks(pool: ThreadMappedPool) -> None:
    with pool.reserve() as first:
        pass
    with pool.reserve() as second:
        assert second is first
    assert pool.stats().created == 1


def test_reserve_returns_a_reservation_and_checkout_a_lease(
    pool: ThreadMappedPool,
) -> None:
    assert isinstance(pool.reserve(), Reservation)
    lease = pool.checkout()
    assert isinstance(lease, Lease)
    lease.release()


# -- thread exit --------------------------------------------------------


def test_a_thread_ending_without_relinquish_gives_its_client_back(
    pool: ThreadMappedPool,
) -> None:
    def use() -> object:
        with pool.reserve() as mc:
            assert mc.set("tm:exit", 1)
            return mc

    first = in_thread(use)
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.created) == (1, 0, 1)
    # The next thread reuses the same client.
    assert in_thread(use) is first
    assert pool.stats().created == 1
    assert_accounted(pool)


def test_a_thread_ending_with_an_exception_gives_its_client_back(
    pool: ThreadMappedPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[BaseException | None] = []
    monkeypatch.setattr(
        threading, "excepthook", lambda args: failures.append(args.exc_value)
    )

    def use_then_fail() -> None:
        with pool.reserve() as mc:
            assert mc.set("tm:failing", 1)
        raise LookupError("the thread's own failure")

    thread = threading.Thread(target=use_then_fail)
    thread.start()
    thread.join()
    assert len(failures) == 1 and isinstance(failures[0], LookupError)
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.discarded) == (1, 0, 0)


def test_a_raw_thread_ending_gives_its_client_back(pool: ThreadMappedPool) -> None:
    """Threads from _thread.start_new_thread have no threading.Thread object."""
    done = threading.Event()
    got: list[object] = []

    def use() -> None:
        with pool.reserve() as mc:
            assert mc.set("tm:raw", 1)
            got.append(mc)
        done.set()

    _thread.start_new_thread(use, ())
    assert done.wait(10)
    # The client comes back as the thread's state is cleared, just after use()
    # returned.
    wait_until(lambda: pool.stats().idle == 1)
    assert pool.stats().in_use == 0
    with pool.reserve() as mc:
        assert mc is got[0]
        assert mc.get("tm:raw") == 1


def test_thread_per_request_server_reuses_connections(
    fresh_memcached: MemcachedServer,
) -> None:
    """werkzeug's threaded dev server starts a new thread for every request."""
    pool = ThreadMappedPool(pylibmc.Client([fresh_memcached.address]), max_spare=2)
    clients: list[object] = []  # held, so that no two share an id()
    threads: set[str] = set()

    @Request.application  # type: ignore[arg-type]
    def app(request: Request) -> Response:
        threads.add(threading.current_thread().name)
        with pool.reserve() as mc:
            clients.append(mc)
            hits = mc.incr("tm:hits")
        return Response(str(hits))

    master = pylibmc.Client([fresh_memcached.address])
    master.set("tm:hits", 0)
    master.disconnect_all()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    try:
        before = int(fresh_memcached.stats()["total_connections"])
        for number in range(1, 41):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/")
            assert conn.getresponse().read() == str(number).encode()
            conn.close()
        wait_until(lambda: pool.stats().in_use == 0)
        # Less the stats connection that reads the count.
        opened = int(fresh_memcached.stats()["total_connections"]) - before - 1
    finally:
        server.shutdown()
        serving.join()
        server.server_close()
    assert len(threads) == 40
    # One request at a time: a request's thread gives its client back as it
    # ends and the next request's thread takes it. Two are alive when a
    # thread has sent its response but not yet ended as the next request
    # arrives.
    stats = pool.stats()
    assert opened == stats.created == len({id(mc) for mc in clients})
    assert stats.created <= 4
    assert stats.idle <= 2
    assert_accounted(pool)
    pool.close()


@pytest.mark.slow
def test_ten_thousand_short_lived_threads_share_a_few_connections(
    fresh_memcached: MemcachedServer,
) -> None:
    threads, batch, max_spare = 10_000, 8, 4
    pool = ThreadMappedPool(
        pylibmc.Client([fresh_memcached.address], binary=True), max_spare=max_spare
    )
    errors: list[BaseException] = []

    def once(number: int) -> None:
        try:
            with pool.reserve() as mc:
                mc.set(f"tm:churn:{number}", number)
                if mc.get(f"tm:churn:{number}") != number:
                    raise AssertionError(f"wrong value for thread {number}")
        except BaseException as exc:
            errors.append(exc)

    before = int(fresh_memcached.stats()["total_connections"])
    samples: list[int] = []
    for first in range(0, threads, batch):
        started = [
            threading.Thread(target=once, args=(number,))
            for number in range(first, first + batch)
        ]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join()
        # Every thread of the batch has ended, and given its client back.
        stats = pool.stats()
        assert stats.in_use == 0
        assert stats.idle == stats.size <= max_spare
        if first % (batch * 10) == 0:
            samples.append(int(fresh_memcached.stats()["curr_connections"]))
    assert errors == []
    # The server's count includes the stats connection that reads it, and
    # clients just closed whose end it has not processed yet (one batch's
    # worth at most).
    assert max(samples) <= max_spare + 1 + batch, samples
    stats = pool.stats()
    assert stats.reserves == threads
    assert stats.in_use == 0 and stats.idle <= max_spare
    assert stats.idle + stats.in_use == stats.created - stats.discarded
    # Each client opened one connection; every sample opened one more.
    after = int(fresh_memcached.stats()["total_connections"])
    assert after - before - len(samples) - 1 == stats.created
    wait_until(
        lambda: int(fresh_memcached.stats()["curr_connections"]) <= max_spare + 1
    )
    # Far fewer clients than threads: they were reused.
    assert stats.created <= threads // 4
    pool.close()


def test_a_binding_kept_after_its_thread_ended_does_not_keep_the_client(
    pool: ThreadMappedPool,
) -> None:
    kept = in_thread(pool.reserve)  # never entered, never exited
    stats = pool.stats()
    assert (stats.idle, stats.in_use) == (1, 0)
    with pytest.raises(RuntimeError, match="went back to the pool"):
        kept.item.get("tm:stale")
    with pool.reserve() as mc:
        assert mc.set("tm:stale", 1)


# -- relinquish ---------------------------------------------------------


def test_relinquish_gives_the_client_back_now(pool: ThreadMappedPool) -> None:
    with pool.reserve() as first:
        pass
    assert pool.relinquish() is None
    stats = pool.stats()
    assert (stats.idle, stats.in_use) == (1, 0)
    # The thread binds again, and takes the spare.
    with pool.reserve() as second:
        assert second is first
    assert pool.stats().reserves == 2


def test_relinquish_twice_is_harmless(pool: ThreadMappedPool) -> None:
    with pool.reserve():
        pass
    pool.relinquish()
    pool.relinquish()
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.discarded) == (1, 0, 0)
    with pool.reserve() as mc:
        assert mc.set("tm:twice", 1)
    assert_accounted(pool)


def test_relinquish_without_a_client_is_harmless(pool: ThreadMappedPool) -> None:
    pool.relinquish()
    assert pool.stats().created == 0


def test_relinquish_from_another_thread_leaves_this_threads_client(
    pool: ThreadMappedPool,
) -> None:
    with pool.reserve() as mine:
        in_thread(pool.relinquish)
        assert pool.stats().in_use == 1
        assert mine.set("tm:other", 1)
    with pool.reserve() as again:
        assert again is mine
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.created) == (1, 0, 1)


def test_relinquish_inside_a_block_waits_for_the_outermost_block(
    pool: ThreadMappedPool,
) -> None:
    with pool.reserve() as outer:
        with pool.reserve():
            pool.relinquish()
        assert pool.stats().in_use == 1
        assert outer.set("tm:deferred", 1)
    stats = pool.stats()
    assert (stats.in_use, stats.idle) == (0, 1)


# -- errors -------------------------------------------------------------


def test_a_fatal_error_discards_the_client(pool: ThreadMappedPool) -> None:
    with pytest.raises(pylibmc.ServerDown):
        with pool.reserve() as broken:
            raise pylibmc.ServerDown("simulated")
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.discarded) == (0, 0, 1)
    with pool.reserve() as mc:
        assert mc is not broken
        assert mc.set("tm:after-fatal", 1)
        assert mc.get("tm:after-fatal") == 1
    assert_accounted(pool)


def test_a_benign_error_keeps_the_client(pool: ThreadMappedPool) -> None:
    with pytest.raises(KeyError):
        with pool.reserve() as first:
            raise KeyError("application error")
    with pool.reserve() as second:
        assert second is first
    assert pool.stats().discarded == 0


def test_a_fatal_error_in_a_nested_block_discards_when_the_outer_ends(
    pool: ThreadMappedPool,
) -> None:
    with pool.reserve() as outer:
        with pytest.raises(pylibmc.ServerDown):
            with pool.reserve():
                raise pylibmc.ServerDown("simulated")
        # The outer block still holds the client: it is not closed under it.
        assert pool.stats().discarded == 0
        assert outer.set("tm:nested-fatal", 1)
    assert pool.stats().discarded == 1
    with pool.reserve() as mc:
        assert mc is not outer
        assert mc.get("tm:nested-fatal") == 1


# -- checkout -----------------------------------------------------------


def test_checkout_leases_the_threads_client_and_keeps_it_bound(
    pool: ThreadMappedPool,
) -> None:
    lease = pool.checkout()
    with pool.reserve() as mc:
        assert mc is lease.item
    lease.release()
    assert lease.released
    lease.release()  # idempotent
    with pytest.raises(RuntimeError, match="released"):
        lease.item  # noqa: B018
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.created) == (1, 0, 1)
    with pool.reserve() as again:
        assert again is mc


def test_a_lease_released_with_a_fatal_error_discards_the_client(
    pool: ThreadMappedPool,
) -> None:
    lease = pool.checkout()
    broken = lease.item
    lease.release(exc=pylibmc.ServerDown("simulated"))
    assert pool.stats().discarded == 1
    with pool.checkout() as mc:
        assert mc is not broken
        assert mc.set("tm:lease", 1)


def test_a_lease_released_in_another_thread_ends_the_lease(
    pool: ThreadMappedPool,
) -> None:
    lease = pool.checkout()
    client = lease.item
    pool.relinquish()  # deferred: the lease is open
    assert pool.stats().in_use == 1
    in_thread(lease.release)
    stats = pool.stats()
    assert (stats.in_use, stats.idle) == (0, 1)
    with pool.reserve() as mc:
        assert mc is client


# -- the cap ------------------------------------------------------------


def test_past_the_cap_a_thread_times_out(master: pylibmc.Client) -> None:
    pool = ThreadMappedPool(master, max_size=1, timeout=0.05)
    with pool.reserve():
        with pytest.raises(PoolTimeout, match="max_size=1"):
            in_thread(pool.reserve)
        with pytest.raises(PoolTimeout, match="block=False"):
            in_thread(lambda: pool.reserve(block=False))
    stats = pool.stats()
    assert (stats.timeouts, stats.in_use, stats.created) == (2, 1, 1)
    # The thread that holds the client is unaffected.
    with pool.reserve() as mc:
        assert mc.set("tm:cap", 1)


def test_a_waiting_thread_gets_the_client_when_its_holder_ends(
    master: pylibmc.Client,
) -> None:
    pool = ThreadMappedPool(master, max_size=1, timeout=30)
    holding = threading.Event()
    finish = threading.Event()
    got: list[object] = []

    def hold() -> None:
        with pool.reserve() as mc:
            got.append(mc)
        holding.set()
        finish.wait(10)  # ends with the client still bound

    def wait() -> None:
        with pool.reserve() as mc:
            got.append(mc)
            assert mc.set("tm:handoff", 1)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(lambda: pool.stats().waiting == 1)
    finish.set()
    holder.join()
    waiter.join()
    assert got[0] is got[1]
    stats = pool.stats()
    assert (stats.created, stats.waits, stats.timeouts) == (1, 1, 0)
    assert_accounted(pool)


def test_spares_unused_past_max_idle_are_closed(master: pylibmc.Client) -> None:
    now = [0.0]
    pool = ThreadMappedPool(master, max_idle=60, clock=lambda: now[0])
    in_thread(lambda: pool.reserve().item.set("tm:idle", 1))
    assert pool.stats().idle == 1
    now[0] = 59.0
    assert pool.prune() == 0
    now[0] = 61.0
    assert pool.prune() == 1
    stats = pool.stats()
    assert (stats.idle, stats.discarded) == (0, 1)
    with pool.reserve() as mc:
        assert mc.get("tm:idle") == 1


def test_max_size_and_max_spare_are_checked(master: pylibmc.Client) -> None:
    with pytest.raises(ValueError, match="max_size"):
        ThreadMappedPool(master, max_size=0)
    with pytest.raises(ValueError, match="max_spare"):
        ThreadMappedPool(master, max_spare=-1)


# -- behaviours and close -----------------------------------------------


def test_set_behaviors_reaches_bound_spare_and_new_clients(
    pool: ThreadMappedPool,
) -> None:
    ready = threading.Event()
    go = threading.Event()
    seen: list[Any] = []

    def bound_before_the_change() -> None:
        with pool.reserve() as mc:
            assert mc.get_behaviors()["tcp_nodelay"] == 0
        ready.set()
        go.wait(10)
        with pool.reserve() as again:
            assert again is mc
            seen.append(again.get_behaviors()["tcp_nodelay"])

    worker = threading.Thread(target=bound_before_the_change)
    worker.start()
    assert ready.wait(10)
    with pool.reserve() as mine:
        pass
    spare = in_thread(lambda: pool.reserve().item)
    pool.set_behaviors({"tcp_nodelay": True})
    go.set()
    worker.join()
    assert seen == [1]
    with pool.reserve() as again:
        assert again is mine
        assert again.get_behaviors()["tcp_nodelay"] == 1
    assert spare.get_behaviors()["tcp_nodelay"] == 1
    new = in_thread(lambda: pool.reserve().item)
    assert new.get_behaviors()["tcp_nodelay"] == 1


def test_close_closes_spares_now_and_bound_clients_later(
    fresh_memcached: MemcachedServer,
) -> None:
    pool = ThreadMappedPool(pylibmc.Client([fresh_memcached.address]))
    bound = threading.Event()
    finish = threading.Event()

    def hold() -> None:
        with pool.reserve() as mc:
            mc.set("tm:close", 1)
        bound.set()
        finish.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert bound.wait(10)
    for _ in range(2):
        with pool.reserve() as mc:
            mc.set("tm:close", 1)
        in_thread(lambda: pool.reserve().item.get("tm:close"))
    stats = pool.stats()
    assert (stats.in_use, stats.idle) == (2, 1)

    pool.close()
    assert pool.closed
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.discarded) == (2, 0, 1)
    # This thread's next reserve gives its client back (closed) and raises.
    with pytest.raises(PoolClosed):
        pool.reserve()
    with pytest.raises(PoolClosed):
        pool.reserve()
    # The other thread's client is closed when that thread ends.
    finish.set()
    holder.join()
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.discarded) == (0, 0, 3)
    assert_accounted(pool)
    wait_until(lambda: fresh_memcached.stats()["curr_connections"] == "1")
    with pytest.raises(PoolClosed):
        in_thread(pool.reserve)


def test_close_inside_a_block_closes_the_client_when_the_block_ends(
    pool: ThreadMappedPool,
) -> None:
    with pool.reserve() as mc:
        pool.close()
        with pytest.raises(PoolClosed):
            pool.reserve()
        assert mc.set("tm:closing", 1)  # still usable until the block ends
        assert pool.stats().in_use == 1
    stats = pool.stats()
    assert (stats.in_use, stats.discarded) == (0, 1)


# -- the WSGI middleware ---------------------------------------------------


def test_wsgi_middleware_on_a_thread_per_request_server(
    fresh_memcached: MemcachedServer,
) -> None:
    pool = ThreadMappedPool(pylibmc.Client([fresh_memcached.address]), max_spare=2)
    errors_seen: list[str] = []
    broken: list[object] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        mc = environ["mcpool.client"]
        if environ["PATH_INFO"] == "/fail":
            broken.append(mc.client)
            raise pylibmc.ServerDown("simulated")
        hits = mc.incr("tm:wsgi")
        # Code below the middleware that reserves by itself gets the same
        # client: the request's thread holds it until the response closes.
        with pool.reserve() as same:
            if same is not mc.client:
                errors_seen.append("a second client in one request")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(hits).encode()]

    with pool.reserve() as mc:
        mc.set("tm:wsgi", 0)
    pool.relinquish()
    server = make_server(
        "127.0.0.1",
        0,
        PoolMiddleware(app, pool),
        threaded=True,
        passthrough_errors=False,
    )
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    try:
        bodies = []
        for path in ["/", "/", "/fail", "/", "/"]:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", path)
            response = conn.getresponse()
            bodies.append((response.status, response.read()))
            conn.close()
        wait_until(lambda: pool.stats().in_use == 0)
    finally:
        server.shutdown()
        serving.join()
        server.server_close()
    assert [b for s, b in bodies if s == 200] == [b"1", b"2", b"3", b"4"]
    assert [s for s, b in bodies] == [200, 200, 500, 200, 200]
    assert errors_seen == []
    # The failed request's client was discarded with its lease, not kept.
    assert pool.stats().discarded == 1
    with pool.reserve() as mc:
        assert mc is not broken[0]
    assert_accounted(pool)
    pool.close()


# -- the Flask extension ---------------------------------------------------


def test_flask_extension_serves_requests_from_a_thread_mapped_pool(
    memcached: MemcachedServer,
) -> None:
    from flask import Flask

    from mcpool.flask import MemcachePool

    memcache = MemcachePool()
    app = Flask(__name__)
    app.config.update(
        MCPOOL_SERVERS=[memcached.address], MCPOOL_POOL="thread", MCPOOL_POOL_SIZE=2
    )
    memcache.init_app(app)

    @app.route("/incr")
    def incr() -> str:
        return str(memcache.client.incr("tm:flask"))

    pool = MemcachePool.get_state(app).pool
    assert isinstance(pool, ThreadMappedPool)
    with pool.reserve() as mc:
        mc.set("tm:flask", 0)

    def requests(count: int) -> list[str]:
        client = app.test_client()
        return [client.get("/incr").text for _ in range(count)]

    assert requests(3) == ["1", "2", "3"]
    # The test client serves requests in the calling thread: its client
    # stays bound between requests, and another thread takes the second.
    assert in_thread(lambda: requests(2)) == ["4", "5"]
    stats = pool.stats()
    assert (stats.max_size, stats.created, stats.in_use, stats.idle) == (2, 2, 1, 1)
    pool.close()


# -- fork ---------------------------------------------------------------

FORK_SCRIPT = r"""
import ctypes, json, os, sys, threading
import pylibmc
from mcpool import ThreadMappedPool

address, how, markers = sys.argv[1], sys.argv[2], sys.argv[3]
if markers == "pid":
    # What the pool falls back to where MADV_WIPEONFORK is missing.
    import mcpool.pool, mcpool.threadmapped
    mcpool.pool._new_fork_marker = mcpool.threadmapped._new_fork_marker = (
        mcpool.pool._PidMarker
    )
pool = ThreadMappedPool(pylibmc.Client([address], binary=True), max_spare=2)
errors, wrong = [], []

def work(tag, rounds):
    for i in range(rounds):
        try:
            with pool.reserve() as mc:
                with pool.reserve() as nested:
                    assert nested is mc
                key = f"fork:{tag}:{i}"
                value = f"{tag}-{i}" * 20
                mc.set(key, value)
                got = mc.get(key)
                if got != value:
                    wrong.append((key, repr(got)[:40]))
        except Exception as exc:
            errors.append(repr(exc))

def in_new_threads(tag, count, rounds, overlapping=False):
    # overlapping: every thread binds a client before any goes on, so the
    # pool has made one per thread; else a thread that ends early may hand
    # its client to the next and fewer are made.
    bound = threading.Barrier(count)
    def run(name):
        if overlapping:
            with pool.reserve():
                pass
            bound.wait()
        work(name, rounds)
    threads = [
        threading.Thread(target=run, args=(f"{tag}-t{n}",)) for n in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

# The parent: a client bound to the main thread, two spares left by ended
# threads, and two live threads that hold clients across the forks.
work("parent", 20)
go = threading.Event()
parked = [threading.Event() for _ in range(2)]
parents_clients = []
def long_lived(n):
    work(f"parent-long{n}", 10)
    with pool.reserve() as mc:
        parents_clients.append(mc)
    parked[n].set()
    go.wait()
    work(f"parent-long{n}", 50)
# Daemon threads: a child forked by libc's fork inherits Python's record of
# them without the threads, and must not wait for them at exit.
long_lived_threads = [
    threading.Thread(target=long_lived, args=(n,), daemon=True) for n in range(2)
]
for thread in long_lived_threads:
    thread.start()
for event in parked:
    event.wait()
in_new_threads("parent-early", 2, 10, overlapping=True)
with pool.reserve() as parent_client:
    pass
parents_clients += [parent_client] + [entry.item for entry in pool._idle]
if type(pool._epoch).__name__ != {"mmap": "mmap", "pid": "_PidEpoch"}[markers]:
    errors.append(f"unexpected epoch marker {pool._epoch!r}")
if (pool.stats().in_use, pool.stats().idle) != (3, 2):
    errors.append(f"expected 3 bound clients and 2 spares: {pool.stats()}")

# PyDLL, unlike CDLL, keeps the GIL through the call: no other thread can
# hold it at the fork and leave the child unable to take it.
libc_fork = ctypes.PyDLL(None).fork
children = []
def fork():
    # os.fork runs Python's at-fork hooks; libc's fork (as uWSGI forks its
    # workers) does not.
    pid = os.fork() if how == "os" else libc_fork()
    if pid == 0:
        close = pool.close_item
        def close_checked(client):
            if any(client is mine for mine in parents_clients):
                errors.append("the child closed one of the parent's clients")
            close(client)
        pool.close_item = close_checked
    return pid

for n in range(4):
    if n % 2:
        pid = fork()
        if pid == 0:
            # Relinquishing the parent's client must not hand it to the
            # child's pool (which has two spares already, so one more
            # would be closed: a quit on the parent's socket).
            pool.relinquish()
    else:
        with pool.reserve() as outer:
            pid = fork()
            if pid == 0:
                with pool.reserve() as inner:
                    if inner is outer or inner is parent_client:
                        errors.append("the child was handed the parent's client")
    if pid == 0:
        work(f"child{n}", 100)
        in_new_threads(f"child{n}", 3, 20)
        stats = pool.stats()
        if stats.idle + stats.in_use != stats.created - stats.discarded:
            errors.append(f"child pool unaccounted: {stats}")
        if errors or wrong:
            sys.stderr.write(json.dumps([errors, wrong]) + "\n")
        sys.exit(3 if (errors or wrong) else 0)  # a normal exit: finalizers run
    children.append(pid)
    work("parent", 10)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
go.set()
for thread in long_lived_threads:
    thread.join()
work("parent", 50)
in_new_threads("parent-late", 3, 20)
with pool.reserve() as mc:
    if mc is not parent_client:
        errors.append("the parent's main thread lost its client")
stats = pool.stats()
print(json.dumps({
    "errors": errors, "wrong": wrong, "children": codes,
    "accounted": stats.idle + stats.in_use == stats.created - stats.discarded,
}))
"""


@pytest.mark.parametrize(
    ("how", "markers"), [("os", "mmap"), ("libc", "mmap"), ("libc", "pid")]
)
def test_forked_children_never_touch_the_parents_clients(
    fresh_memcached: MemcachedServer, tmp_path: Path, how: str, markers: str
) -> None:
    script = tmp_path / "fork_script.py"
    script.write_text(FORK_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), fresh_memcached.address, how, markers],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    expected = {"errors": [], "wrong": [], "children": [0] * 4, "accounted": True}
    assert outcome == expected, result.stderr


# -- green threads ------------------------------------------------------


def fake_module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def test_warns_when_gevent_patched_threading(
    monkeypatch: pytest.MonkeyPatch, master: pylibmc.Client
) -> None:
    # gevent.monkey.is_module_patched looks the name up in the registry of
    # what patch_all() replaced.
    saved = {"threading": {"local": object()}}
    monkeypatch.setitem(
        sys.modules,
        "gevent.monkey",
        fake_module("gevent.monkey", is_module_patched=lambda name: name in saved),
    )
    with pytest.warns(GreenThreadsWarning, match="gevent.*mcpool.ClientPool"):
        ThreadMappedPool(master)


GEVENT_PATCHED = """
from gevent import monkey

monkey.patch_all()

import warnings

import pylibmc

import mcpool

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    mcpool.ThreadMappedPool(pylibmc.Client(["127.0.0.1:11211"]))
    mcpool.ClientPool(pylibmc.Client(["127.0.0.1:11211"]), 2)
for warning in caught:
    print(warning.category.__name__, warning.message)
"""


def test_warns_under_gevent_patch_all() -> None:
    """The real thing: gevent's patch_all() in a process of its own."""
    result = subprocess.run(
        [sys.executable, "-c", GEVENT_PATCHED],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # Exactly one warning: ThreadMappedPool's, not ClientPool's.
    assert len(lines) == 1, lines
    assert lines[0].startswith("GreenThreadsWarning threading is monkey-patched by")
    assert "use mcpool.ClientPool" in lines[0]


def test_warns_when_eventlet_patched_threading(
    monkeypatch: pytest.MonkeyPatch, master: pylibmc.Client
) -> None:
    already_patched = {"thread": True}
    monkeypatch.setitem(
        sys.modules,
        "eventlet.patcher",
        fake_module(
            "eventlet.patcher", is_monkey_patched=lambda name: name in already_patched
        ),
    )
    with pytest.warns(GreenThreadsWarning, match="eventlet.*blocks the event loop"):
        ThreadMappedPool(master)


def test_no_warning_when_only_other_modules_are_patched(
    monkeypatch: pytest.MonkeyPatch, master: pylibmc.Client
) -> None:
    saved = {"socket": {}}
    monkeypatch.setitem(
        sys.modules,
        "gevent.monkey",
        fake_module("gevent.monkey", is_module_patched=lambda name: name in saved),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ThreadMappedPool(master)
