"""mcpool's pools against the other ways to share memcached clients in Python.

Run it (it starts its own memcached on a free loopback port)::

    .venv/bin/python benchmarks/bench_peers.py --json benchmarks/results/peers.json \
        --markdown benchmarks/results/peers.md --plot docs/_static/peers.png
    .venv/bin/python benchmarks/bench_peers.py --quick    # a smoke run

Every contender does the same thing: a ``get`` of one 100-byte value over
the text protocol. The contenders: ``mcpool.ClientPool`` of
``mcpool.Client`` clones, ``mcpool.ThreadMappedPool``, ``pylibmc.ClientPool``
(``reserve(block=True)``), ``pylibmc.ThreadMappedPool``, pymemcache's
``PooledClient``, a pymemcache ``Client`` per thread, and a bare
``pylibmc.Client`` per thread as the floor.

Two tables:

1. Uncontended, one thread: median ns per get over interleaved rounds, and
   the ratio to the floor.
2. 16 threads, each doing gets for a fixed time per round: ops/s, the
   slowest thread's share of the ops (1/16 is perfectly fair), the errors by
   type, and the memcached connections the contender used (the server's
   ``curr_connections`` during the run and ``total_connections`` over it).
   The pools with a limit (``ClientPool``, ``PooledClient``) get the same
   number of connections; the thread-mapped pools and the per-thread clients
   have one per thread by design.
"""

from __future__ import annotations

import argparse
import collections
import gc
import statistics
import sys
import threading
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pylibmc
from pymemcache.client.base import Client as PymemcacheClient
from pymemcache.client.base import PooledClient
from report import markdown_table, versions_line, write_json

import mcpool
from mcpool.testing import MemcachedServer, server_stats

KEY = "bench:peers"
VALUE = b"x" * 100
THREADS = 16
FLOOR = "pylibmc.Client per thread"

Get = Callable[[], object]


@dataclass
class Contender:
    """How to set one contender up, get through it in a thread, and close it.

    :param setup: makes the shared object (a pool, or a list of clients).
    :param getter: called once in each thread with the shared object; returns
        the function that does one get from that thread.
    :param teardown: closes every connection the shared object opened.
    :param connections: what the contender may open, for the table.
    """

    name: str
    setup: Callable[[], Any]
    getter: Callable[[Any], Get]
    teardown: Callable[[Any], None]
    connections: str


def reserve_get(pool: Any) -> Get:
    def get() -> object:
        with pool.reserve() as mc:
            return mc.get(KEY)

    return get


def pylibmc_reserve_get(pool: Any) -> Get:
    def get() -> object:
        with pool.reserve(block=True) as mc:
            return mc.get(KEY)

    return get


def contenders(address: str, host: str, port: int, pool_size: int) -> list[Contender]:
    def own_client(make: Callable[[], Any]) -> Callable[[list[Any]], Get]:
        def getter(clients: list[Any]) -> Get:
            client = make()
            clients.append(client)
            return lambda: client.get(KEY)

        return getter

    def close_pylibmc_clients(clients: list[Any]) -> None:
        for client in clients:
            client.disconnect_all()

    def close_pymemcache_clients(clients: list[Any]) -> None:
        for client in clients:
            client.close()

    def close_pylibmc_threadmapped(pool: Any) -> None:
        close_pylibmc_clients(list(pool.values()))
        pool.clear()

    per_thread = f"{THREADS} (one per thread)"
    pooled = f"{pool_size} (pool limit)"
    return [
        Contender(
            "mcpool.ClientPool",
            lambda: mcpool.ClientPool(mcpool.Client([address]), pool_size),
            reserve_get,
            lambda pool: pool.close(),
            pooled,
        ),
        Contender(
            "pylibmc.ClientPool",
            lambda: pylibmc.ClientPool(pylibmc.Client([address]), pool_size),
            pylibmc_reserve_get,
            lambda pool: close_pylibmc_clients(list(pool.queue)),
            pooled,
        ),
        Contender(
            "pymemcache PooledClient",
            lambda: PooledClient((host, port), max_pool_size=pool_size),
            lambda client: lambda: client.get(KEY),
            lambda client: client.close(),
            pooled,
        ),
        Contender(
            "mcpool.ThreadMappedPool",
            lambda: mcpool.ThreadMappedPool(mcpool.Client([address])),
            reserve_get,
            lambda pool: pool.close(),
            per_thread,
        ),
        Contender(
            "pylibmc.ThreadMappedPool",
            lambda: pylibmc.ThreadMappedPool(pylibmc.Client([address])),
            reserve_get,
            close_pylibmc_threadmapped,
            per_thread,
        ),
        Contender(
            "pymemcache Client per thread",
            list,
            own_client(lambda: PymemcacheClient((host, port))),
            close_pymemcache_clients,
            per_thread,
        ),
        Contender(
            FLOOR,
            list,
            own_client(lambda: pylibmc.Client([address])),
            close_pylibmc_clients,
            per_thread,
        ),
    ]


def rotated(items: list[Contender], n: int) -> list[Contender]:
    """*items* starting *n* further on, so that no contender always follows
    the same one on a machine whose load comes and goes."""
    n %= len(items)
    return items[n:] + items[:n]


def uncontended(
    peers: list[Contender], rounds: int, number: int
) -> dict[str, list[float]]:
    """ns per get in this thread, one list of samples per contender."""
    samples: dict[str, list[float]] = {c.name: [] for c in peers}
    for n in range(rounds):
        for contender in rotated(peers, n):
            shared = contender.setup()
            get = contender.getter(shared)
            if get() != VALUE:
                raise SystemExit(f"{contender.name} did not read the value back")
            t = min(timeit.repeat(get, number=number, repeat=3))
            samples[contender.name].append(t / number * 1e9)
            contender.teardown(shared)
    return samples


def connections(host: str, port: int) -> tuple[int, int]:
    """The server's ``curr_connections`` and ``total_connections``."""
    stats = server_stats(host, port)
    return int(stats["curr_connections"]), int(stats["total_connections"])


def contended(
    contender: Contender, host: str, port: int, seconds: float
) -> dict[str, Any]:
    """*THREADS* threads doing gets through *contender* for *seconds*."""
    gc.collect()
    curr_before, total_before = connections(host, port)
    shared = contender.setup()
    done = [0] * THREADS
    errors: list[collections.Counter[str]] = [
        collections.Counter() for _ in range(THREADS)
    ]
    stop = threading.Event()
    start = threading.Barrier(THREADS + 1)

    def worker(n: int) -> None:
        get = contender.getter(shared)
        start.wait()
        while not stop.is_set():
            try:
                get()
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors[n][f"{type(exc).__module__}.{type(exc).__qualname__}"] += 1
            else:
                done[n] += 1

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    # Read while every thread still holds what it opened.
    curr_during, _ = connections(host, port)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    _, total_after = connections(host, port)
    contender.teardown(shared)
    total_errors = sum(errors, collections.Counter[str]())
    return {
        "ops_per_s": sum(done) / elapsed,
        "slowest_share": min(done) / sum(done) if sum(done) else 0.0,
        "shares": sorted(d / sum(done) if sum(done) else 0.0 for d in done),
        "threads_starved": sum(1 for d in done if d * THREADS * 10 < sum(done)),
        "errors_per_s": {k: v / elapsed for k, v in total_errors.items()},
        "curr_connections": curr_during - curr_before,
        # Less the two connections the stats reads above opened themselves.
        "opened_connections": total_after - total_before - 2,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds; the shares of the round with the median ops/s."""
    by_ops = sorted(runs, key=lambda r: r["ops_per_s"])
    kinds = sorted({k for r in runs for k in r["errors_per_s"]})
    return {
        "ops_per_s": statistics.median(r["ops_per_s"] for r in runs),
        "slowest_share": statistics.median(r["slowest_share"] for r in runs),
        "threads_starved": statistics.median(r["threads_starved"] for r in runs),
        "errors_per_s": {
            k: statistics.median(r["errors_per_s"].get(k, 0.0) for r in runs)
            for k in kinds
        },
        "curr_connections": statistics.median(r["curr_connections"] for r in runs),
        "opened_connections": statistics.median(r["opened_connections"] for r in runs),
        "shares": by_ops[len(by_ops) // 2]["shares"],
        "rounds": runs,
    }


def errors_cell(errors: dict[str, float]) -> str:
    shown = [
        f"{name.rsplit('.', 1)[-1]} {rate:,.0f}/s" for name, rate in errors.items()
    ]
    return ", ".join(shown) or "none"


def plot(results: dict[str, Any], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    names = list(results["uncontended"])
    fig, (single, many, shares) = plt.subplots(1, 3, figsize=(14, 4.5), dpi=110)
    colors = [f"C{i}" for i in range(len(names))]
    ys = range(len(names))

    single.barh(ys, [results["uncontended"][n] / 1000 for n in names], color=colors)
    single.set_yticks(list(ys), labels=names, fontsize=8)
    single.invert_yaxis()
    single.set_xlabel("µs per get (median)")
    single.set_title("One thread")

    many.barh(ys, [results["contended"][n]["ops_per_s"] for n in names], color=colors)
    many.set_yticks(list(ys), labels=[""] * len(names))
    many.invert_yaxis()
    many.set_xlabel("gets per second, all threads (median)")
    many.set_title(f"{THREADS} threads")
    top = max(results["contended"][n]["ops_per_s"] for n in names)
    many.set_xlim(0, top * 1.2)  # room for the labels
    for y, n in zip(ys, names, strict=True):
        conns = results["contended"][n]["curr_connections"]
        ops = results["contended"][n]["ops_per_s"]
        many.text(ops, y, f" {conns:.0f} conns", va="center", fontsize=7)

    for n, color in zip(names, colors, strict=True):
        values = [s * THREADS for s in results["contended"][n]["shares"]]
        shares.plot(range(1, THREADS + 1), values, "o-", ms=3, color=color, label=n)
    shares.axhline(1.0, color="gray", linewidth=0.8)
    shares.set_xlabel(f"thread (sorted), {THREADS} threads")
    shares.set_ylabel("thread's gets / fair share")
    shares.set_title("Who got served")
    shares.legend(fontsize=7)
    shares.grid(True, alpha=0.3)

    fig.suptitle(
        f"get of a 100-byte value from one loopback memcached "
        f"(medians: {results['rounds']} rounds one thread, "
        f"{results['contended_rounds']} x {results['seconds']:g} s with "
        f"{THREADS} threads; pools limited to {results['pool_size']} clients; "
        f"{results['versions']}, pymemcache {_pymemcache_version()})",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--pool-size", type=int, default=4, help="default 4")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument("--plot", type=Path, help="also draw the results (PNG)")
    args = parser.parse_args()
    rounds, number, contended_rounds, seconds = (
        (3, 500, 1, 0.5) if args.quick else (7, 3000, 3, 2.0)
    )
    results: dict[str, Any] = {
        "rounds": rounds,
        "number": number,
        "contended_rounds": contended_rounds,
        "seconds": seconds,
        "pool_size": args.pool_size,
        "versions": versions_line(),
        "contended": {},
    }
    with MemcachedServer() as server:
        host, port = server.host, server.port
        pylibmc.Client([server.address]).set(KEY, VALUE)
        peers = contenders(server.address, host, port, args.pool_size)
        samples = uncontended(peers, rounds, number)
        runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in peers}
        for n in range(contended_rounds):
            for contender in rotated(peers, n):
                runs[contender.name].append(contended(contender, host, port, seconds))

    floor = statistics.median(samples[FLOOR])
    results["uncontended"] = {n: statistics.median(v) for n, v in samples.items()}
    single_rows = [
        [name, f"{med:,.0f}", f"{min(samples[name]):,.0f}", f"{med / floor:.2f}x"]
        for name, med in results["uncontended"].items()
    ]
    for name, rs in runs.items():
        results["contended"][name] = summarize(rs)
    floor_ops = results["contended"][FLOOR]["ops_per_s"]
    contended_rows = []
    for contender in peers:
        med = results["contended"][contender.name]
        contended_rows.append(
            [
                contender.name,
                contender.connections,
                f"{med['ops_per_s']:,.0f}",
                f"{med['ops_per_s'] / floor_ops:.2f}x",
                f"{med['slowest_share']:.2%}",
                f"{med['threads_starved']:.0f}",
                errors_cell(med["errors_per_s"]),
                f"{med['curr_connections']:.0f} / {med['opened_connections']:.0f}",
            ]
        )
    lines = [
        f"One thread, no contention: ns per get ({rounds} rounds x best of "
        f"3 x {number}, interleaved)",
        "",
        *markdown_table(
            ["contender", "median ns/get", "min ns/get", f"x {FLOOR}"], single_rows
        ),
        "",
        f"{THREADS} threads, gets for {seconds:g} s per round ({contended_rounds} "
        f"rounds, interleaved, medians)",
        "",
        *markdown_table(
            [
                "contender",
                "connections allowed",
                "gets/s",
                f"x {FLOOR}",
                "slowest thread's share (fair: 6.25%)",
                "threads starved",
                "errors",
                "connections open / opened",
            ],
            contended_rows,
            align="llrrrrlr",
        ),
        "",
        "threads starved: those with less than a tenth of a fair share. "
        "errors: exceptions raised by a get, per second, by type (the thread "
        "counts it and goes on). connections open / opened: the server's "
        "curr_connections during the round and total_connections over it, "
        "less those before.",
        "",
        versions_line() + f", pymemcache {_pymemcache_version()}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        write_json(args.json, results)
    if args.plot:
        plot(results, str(args.plot))
    return 0


def _pymemcache_version() -> str:
    import pymemcache

    return str(pymemcache.__version__)


if __name__ == "__main__":
    sys.exit(main())
