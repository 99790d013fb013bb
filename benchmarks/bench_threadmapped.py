"""ThreadMappedPool against pylibmc.ThreadMappedPool, measured side by side.

Run it (it starts its own memcached servers on free loopback ports)::

    .venv/bin/python benchmarks/bench_threadmapped.py            # full run
    .venv/bin/python benchmarks/bench_threadmapped.py --quick    # a smoke run

Two tables:

1. The fast path: ``with pool.reserve(): pass`` in a thread that already
   holds its client, ns per reserve+release (median of interleaved rounds),
   with mcpool's ClientPool beside them for reference.
2. Thread churn: a new thread for every operation (``reserve`` + one
   ``get``), started in batches of 8 concurrent threads, as a
   thread-per-request server does. Each pool gets a memcached of its own so
   that the server's ``total_connections`` counts only that pool's
   connections: how many it opened, and how many are still open at the end.
3. Nested reserve: one thread, again and again, doing a ``get`` in a
   ``reserve()`` block and another in a block nested in it, as a cached
   view that calls a cached helper does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import timeit
from collections.abc import Callable
from typing import Any

import pylibmc
from report import (
    load_baseline,
    median_by_key,
    print_markdown_table,
    print_ns_per_op_table,
    versions_line,
    write_json,
)

import mcpool
from mcpool.testing import MemcachedServer

BATCH = 8


def fast_path(
    pools: dict[str, Any], rounds: int, number: int
) -> dict[str, list[float]]:
    """ns per reserve+release in this thread, one list of samples per pool."""
    for pool in pools.values():
        with pool.reserve():  # bind this thread's client before timing
            pass
    samples: dict[str, list[float]] = {name: [] for name in pools}
    for _ in range(rounds):
        for name, pool in pools.items():
            t = min(
                timeit.repeat(
                    "with pool.reserve(): pass",
                    globals={"pool": pool},
                    number=number,
                    repeat=3,
                )
            )
            samples[name].append(t / number * 1e9)
    return samples


def churn(make_pool: Callable[[pylibmc.Client], Any], threads: int) -> dict[str, float]:
    """*threads* new threads, each doing one reserve + get, on a fresh server."""
    with MemcachedServer() as server:
        master = pylibmc.Client([server.address], binary=True)
        master.set("bench:key", "x" * 100)
        master.disconnect_all()
        pool = make_pool(master)
        errors: list[BaseException] = []

        def once() -> None:
            try:
                with pool.reserve() as mc:
                    if mc.get("bench:key") is None:
                        raise AssertionError("bench:key missing")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        before = int(server.stats()["total_connections"])
        began = time.perf_counter()
        for _ in range(0, threads, BATCH):
            batch = [threading.Thread(target=once) for _ in range(BATCH)]
            for thread in batch:
                thread.start()
            for thread in batch:
                thread.join()
        elapsed = time.perf_counter() - began
        stats = server.stats()
        if errors:
            raise RuntimeError(f"{len(errors)} operations failed: {errors[0]!r}")
        done = threads // BATCH * BATCH
        return {
            "ops_per_s": done / elapsed,
            # Less the stats connection that reads the counts.
            "opened": int(stats["total_connections"]) - before - 1,
            "open_at_end": int(stats["curr_connections"]) - 1,
        }


def nested(make_pool: Callable[[pylibmc.Client], Any], number: int) -> dict[str, float]:
    """*number* outer blocks with one nested block each, on a fresh server."""
    with MemcachedServer() as server:
        master = pylibmc.Client([server.address], binary=True)
        master.set("bench:key", "x" * 100)
        master.disconnect_all()
        pool = make_pool(master)
        before = int(server.stats()["total_connections"])
        began = time.perf_counter()
        for _ in range(number):
            with pool.reserve() as outer:
                outer.get("bench:key")
                with pool.reserve() as inner:
                    if inner.get("bench:key") is None:
                        raise AssertionError("bench:key missing")
        elapsed = time.perf_counter() - began
        stats = server.stats()
        return {
            "ops_per_s": number / elapsed,
            "opened": int(stats["total_connections"]) - before - 1,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="also time the mcpool package of this checkout (a before/after row)",
    )
    args = parser.parse_args()
    rounds, number, threads, reps, nests = (
        (3, 20_000, 800, 1, 200) if args.quick else (9, 100_000, 10_000, 3, 2_000)
    )
    results: dict[str, Any] = {"fast_path": {}, "churn": {}, "nested": {}}

    with MemcachedServer() as server:
        master = pylibmc.Client([server.address], binary=True)
        pools: dict[str, Any] = {
            "mcpool.ThreadMappedPool": mcpool.ThreadMappedPool(master),
            **(
                {
                    "mcpool.ThreadMappedPool (baseline)": load_baseline(
                        args.baseline
                    ).ThreadMappedPool(master)
                }
                if args.baseline
                else {}
            ),
            "pylibmc.ThreadMappedPool": pylibmc.ThreadMappedPool(master),
            "mcpool.ClientPool": mcpool.ClientPool(master, 4),
        }
        samples = fast_path(pools, rounds, number)
    results["fast_path"] = print_ns_per_op_table(
        "Fast path: reserve+release in a thread that holds its client "
        f"({rounds} rounds x {number})",
        samples,
        baseline="pylibmc.ThreadMappedPool",
    )

    makers: dict[str, Callable[[pylibmc.Client], Any]] = {
        "mcpool.ThreadMappedPool": lambda m: mcpool.ThreadMappedPool(m),
        "pylibmc.ThreadMappedPool": pylibmc.ThreadMappedPool,
        "mcpool.ClientPool(8)": lambda m: mcpool.ClientPool(m, 8),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in makers}
    for _ in range(reps):
        for name, make in makers.items():
            runs[name].append(churn(make, threads))
    pylibmc_ops = statistics.median(
        r["ops_per_s"] for r in runs["pylibmc.ThreadMappedPool"]
    )
    rows = []
    for name, rs in runs.items():
        med = median_by_key(rs)
        results["churn"][name] = med
        rows.append(
            [
                name,
                f"{med['ops_per_s']:.0f}",
                f"{med['ops_per_s'] / pylibmc_ops:.2f}x",
                f"{med['opened']:.0f}",
                f"{med['open_at_end']:.0f}",
            ]
        )
    print_markdown_table(
        f"Thread churn: {threads} new threads, one reserve + get each, "
        f"{BATCH} at a time ({reps} runs, medians)",
        ["pool", "ops/s", "vs pylibmc", "connections opened", "open at the end"],
        rows,
    )

    nested_runs = {
        name: [nested(make, nests) for _ in range(reps)]
        for name, make in list(makers.items())[:2]
    }
    pylibmc_ops = statistics.median(
        r["ops_per_s"] for r in nested_runs["pylibmc.ThreadMappedPool"]
    )
    rows = []
    for name, rs in nested_runs.items():
        med = median_by_key(rs)
        results["nested"][name] = med
        rows.append(
            [
                name,
                f"{med['ops_per_s']:.0f}",
                f"{med['ops_per_s'] / pylibmc_ops:.2f}x",
                f"{med['opened']:.0f}",
            ]
        )
    print_markdown_table(
        f"Nested reserve: {nests} blocks in one thread, each a get and a nested "
        f"block with a get ({reps} runs, medians)",
        ["pool", "ops/s", "vs pylibmc", "connections opened"],
        rows,
    )
    print(versions_line())
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
