"""What a request costs while every memcached server is down, with and
without mcpool.Client failing fast, and how soon a pool recovers.

Run: ``.venv/bin/python benchmarks/bench_all_down.py [--window 3] [--threads 8]``

Three loopback servers and a ``ClientPool`` of 8 clones; 8 threads do
get+set over keys of all three servers. Every server is then paused
(SIGSTOP: connections hang) or killed (SIGKILL: connections are refused) for
*window* seconds, and brought back (SIGCONT, or a restart on the same port).
The same run is made with ``mcpool.Client`` as it is and with a variant
whose fail-fast switch never turns on (everything else equal), side by side.
The table gives per-request latency (median, p99, max), requests completed
per second while down, and the time from the servers' return until one
thread, and then every thread at once, can set and get a key again.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pylibmc
from report import versions_line

from mcpool import Client, ClientPool, ServerUnavailable
from mcpool.servers import ServerHealth
from mcpool.testing import memcached_servers

TIMEOUT = 0.25  # mcpool.Client's default


class _NeverAllDown(ServerHealth):
    """ServerHealth whose fail-fast switch stays off."""

    @property
    def all_down(self) -> bool:
        return False

    @all_down.setter
    def all_down(self, value: bool) -> None:
        pass


class NoFailFast(Client):
    """mcpool.Client with failing fast switched off."""

    def __init__(self, servers: list[str], **kwargs: Any) -> None:
        super().__init__(servers, **kwargs)
        health = self.health
        self.health = _NeverAllDown(
            health.servers,
            timeout=health.timeout,
            recheck=health.recheck,
            binary=health.binary,
        )


def load(
    pool: ClientPool, keys: list[str], threads: int, seconds: float
) -> list[float]:
    """Latencies of get+set requests from *threads* threads for *seconds*."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def work(offset: int) -> None:
        mine: list[float] = []
        i = offset
        while time.monotonic() < deadline:
            key = keys[i % len(keys)]
            i += 1
            started = time.monotonic()
            with pool.reserve() as mc:
                mc.get(key)
                try:
                    mc.set(key, key)
                except (ServerUnavailable, pylibmc.Error):
                    pass
            mine.append(time.monotonic() - started)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work, args=(n * 7,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies


def every_thread_recovers(pool: ClientPool, threads: int) -> bool:
    """Whether a set and then a get of its own key works for each of
    *threads* threads (a killed server comes back empty)."""
    ok: list[bool] = []

    def work(n: int) -> None:
        key = f"bench:down:back:{n}"
        with pool.reserve() as mc:
            try:
                ok.append(bool(mc.set(key, key)) and mc.get(key) == key)
            except (ServerUnavailable, pylibmc.Error):
                ok.append(False)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return all(ok)


def until(condition: Callable[[], bool], limit: float = 60.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            return float("inf")
        time.sleep(0.01)
    return time.monotonic() - started


def run(
    make: Callable[..., Client], how: str, window: float, threads: int
) -> dict[str, float]:
    with memcached_servers(3) as servers:
        pool = ClientPool(make([s.address for s in servers], timeout=TIMEOUT), 8)
        keys = [f"bench:down:{i}" for i in range(60)]
        seeder = Client([s.address for s in servers], timeout=5.0)
        for key in keys:
            seeder.set(key, key)
        del seeder
        load(pool, keys, threads, 0.5)  # every clone connected
        for server in servers:
            server.pause() if how == "paused" else server.kill()
        latencies = load(pool, keys, threads, window)
        back = time.monotonic()
        for server in servers:
            server.resume() if how == "paused" else server.start()
        until(lambda: every_thread_recovers(pool, 1))
        first = time.monotonic() - back
        until(lambda: every_thread_recovers(pool, threads))
        every = time.monotonic() - back
        ms = sorted(x * 1000 for x in latencies)
        return {
            "median_ms": statistics.median(ms),
            "p99_ms": ms[int(len(ms) * 0.99) - 1],
            "max_ms": ms[-1],
            "req_per_s": len(ms) / window,
            "first_ok_s": first,
            "all_ok_s": every,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    # The down/up lines of each run would break up the table.
    logging.getLogger("mcpool.servers").setLevel(logging.ERROR)
    print(versions_line("pylibmc", "libmemcached"))
    print(
        f"3 servers, ClientPool of 8, {args.threads} threads of get+set, "
        f"every server down for {args.window:g} s, client timeout {TIMEOUT} s"
    )
    header = (
        f"{'servers':8} {'client':22} {'median ms':>10} {'p99 ms':>8} "
        f"{'max ms':>8} {'req/s':>9} {'1st ok s':>10} {'all ok s':>10}"
    )
    print(header)
    print("-" * len(header))
    for how in ("paused", "killed"):
        rows = {}
        for name, make in (("no fail-fast", NoFailFast), ("mcpool.Client", Client)):
            rows[name] = r = run(make, how, args.window, args.threads)
            print(
                f"{how:8} {name:22} {r['median_ms']:10.2f} {r['p99_ms']:8.1f} "
                f"{r['max_ms']:8.1f} {r['req_per_s']:9.0f} {r['first_ok_s']:10.2f} "
                f"{r['all_ok_s']:10.2f}"
            )
        before, after = rows["no fail-fast"], rows["mcpool.Client"]
        print(
            f"{how:8} {'ratio (fail-fast/not)':22} "
            f"{after['median_ms'] / before['median_ms']:10.2f} "
            f"{after['p99_ms'] / before['p99_ms']:8.2f} "
            f"{after['max_ms'] / before['max_ms']:8.2f} "
            f"{after['req_per_s'] / before['req_per_s']:9.1f}"
        )


if __name__ == "__main__":
    main()
