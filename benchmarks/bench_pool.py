"""ClientPool against pylibmc.ClientPool, measured side by side in one run.

Run it (it starts its own memcached on a free loopback port)::

    .venv/bin/python benchmarks/bench_pool.py            # full run
    .venv/bin/python benchmarks/bench_pool.py --quick    # a smoke run
    git worktree add /tmp/telemetry-before main
    .venv/bin/python benchmarks/bench_pool.py --baseline /tmp/telemetry-before

Three tables:

1. Uncontended ``with pool.reserve(): pass`` in one thread, ns per
   reserve+release (median of rounds), for mcpool, pylibmc, and a bare
   ``collections.deque`` pop/append as the floor.
2. Contention: 16 threads share 4 clients, each reservation doing one real
   memcached ``get``. Throughput, and how evenly the threads were served
   (the slowest and fastest thread's share of the mean, threads that got
   nothing).
3. What telemetry costs, in the same rounds as table 1: mcpool with timings
   off (and the baseline checkout's, with ``--baseline``), with
   ``timings=True``, and with the OpenTelemetry and Prometheus exporters
   attached, against the first of those rows.
"""

from __future__ import annotations

import argparse
import collections
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


def uncontended(
    pools: dict[str, Any], rounds: int, number: int
) -> dict[str, list[float]]:
    """ns per reserve+release, one list of samples per pool, interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in pools}
    names = list(pools)
    for n in range(rounds):
        # Each round starts one pool further on, so that no pool always
        # follows the same one on a machine whose load comes and goes.
        for name in names[n % len(names) :] + names[: n % len(names)]:
            pool = pools[name]
            if name == "deque pop/append":
                d = pool
                stmt: Callable[[], object] = lambda d=d: d.append(d.pop())  # noqa: E731
                t = min(timeit.repeat(stmt, number=number, repeat=3))
            else:
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


TELEMETRY = "mcpool.ClientPool, "


def telemetry_pools(master: Any, exporters: bool) -> dict[str, Any]:
    """mcpool pools with timings on, and with each installed exporter."""
    pools: dict[str, Any] = {
        TELEMETRY + "timings=True": mcpool.ClientPool(master, 4, timings=True)
    }
    if not exporters:
        return pools
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from mcpool.otel import instrument as otel_instrument
    except ImportError:
        pass
    else:
        pool = mcpool.ClientPool(master, 4)
        provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        otel_instrument(pool, meter_provider=provider)
        pools[TELEMETRY + "otel.instrument (SDK)"] = pool
    try:
        from prometheus_client import CollectorRegistry

        from mcpool.prometheus import instrument as prometheus_instrument
    except ImportError:
        pass
    else:
        pool = mcpool.ClientPool(master, 4)
        prometheus_instrument(pool, registry=CollectorRegistry())
        # In one process; in multiprocess mode each write goes to a file.
        pools[TELEMETRY + "prometheus.instrument"] = pool
    return pools


def print_cost_table(
    title: str, samples: dict[str, list[float]], reference: str
) -> dict[str, float]:
    """ns per reserve+release and the ratio to *reference*, in medians."""
    base = statistics.median(samples[reference])
    medians: dict[str, float] = {}
    rows = []
    for name, values in samples.items():
        med = medians[name] = statistics.median(values)
        rows.append(
            [
                name,
                f"{med:.0f}",
                f"{min(values):.0f}",
                f"{med / base:.3f}x",
                f"{med - base:+.0f}",
            ]
        )
    print_markdown_table(
        title,
        ["pool", "median ns/op", "min ns/op", f"vs {reference}", "ns added"],
        rows,
    )
    return medians


def contended(pool: Any, threads: int, seconds: float) -> dict[str, float]:
    """Run *threads* threads doing reserve + get for *seconds*."""
    done = [0] * threads
    stop = threading.Event()
    start = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        start.wait()
        try:
            while not stop.is_set():
                with pool.reserve(block=True) as mc:
                    mc.get("bench:key")
                done[n] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"worker failed: {errors[0]!r}")
    mean = statistics.mean(done)
    return {
        "ops_per_s": sum(done) / elapsed,
        "min_share": min(done) / mean,
        "max_share": max(done) / mean,
        "starved": sum(1 for d in done if d == 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--rounds", type=int, help="rounds of the uncontended tables (default 9)"
    )
    parser.add_argument(
        "--no-exporters",
        action="store_true",
        help="leave the OpenTelemetry and Prometheus rows out of table 3",
    )
    parser.add_argument(
        "--uncontended-only",
        action="store_true",
        help="skip the contention table (tables 1 and 3 only)",
    )
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="also time the mcpool package of this checkout (a before/after row)",
    )
    args = parser.parse_args()
    rounds, number, seconds, reps = (
        (3, 20_000, 0.5, 1)
        if args.quick
        else (
            9,
            100_000,
            3.0,
            5,
        )
    )

    if args.rounds:
        rounds = args.rounds
    with MemcachedServer() as server:
        master = pylibmc.Client([server.address], binary=True)
        master.set("bench:key", "x" * 100)

        pools: dict[str, Any] = {
            "mcpool.ClientPool": mcpool.ClientPool(master, 4),
            **(
                {
                    "mcpool.ClientPool (baseline)": load_baseline(
                        args.baseline
                    ).ClientPool(master, 4)
                }
                if args.baseline
                else {}
            ),
            "pylibmc.ClientPool": pylibmc.ClientPool(master, 4),
            "deque pop/append": collections.deque([object()]),
            **telemetry_pools(master, exporters=not args.no_exporters),
        }
        samples = uncontended(pools, rounds, number)
        results: dict[str, Any] = {"uncontended": {}, "contended": {}}
        results["uncontended"] = print_ns_per_op_table(
            f"Uncontended reserve+release, one thread ({rounds} rounds x {number})",
            {k: v for k, v in samples.items() if not k.startswith(TELEMETRY)},
            baseline="pylibmc.ClientPool",
        )
        reference = (
            "mcpool.ClientPool (baseline)" if args.baseline else "mcpool.ClientPool"
        )
        results["telemetry"] = print_cost_table(
            f"Telemetry cost, uncontended reserve+release ({rounds} rounds x "
            f"{number}, medians)",
            {
                k: v
                for k, v in samples.items()
                if k.startswith(TELEMETRY) or k.startswith("mcpool.ClientPool")
            },
            reference,
        )
        if args.uncontended_only:
            print(versions_line())
            if args.json:
                write_json(args.json, results)
            return 0

        runs: dict[str, list[dict[str, float]]] = {"mcpool": [], "pylibmc": []}
        for _ in range(reps):
            runs["mcpool"].append(contended(mcpool.ClientPool(master, 4), 16, seconds))
            runs["pylibmc"].append(
                contended(pylibmc.ClientPool(master, 4), 16, seconds)
            )
        pylibmc_ops = statistics.median(r["ops_per_s"] for r in runs["pylibmc"])
        rows = []
        for name, rs in runs.items():
            med = median_by_key(rs)
            results["contended"][name] = med
            rows.append(
                [
                    name,
                    f"{med['ops_per_s']:.0f}",
                    f"{med['ops_per_s'] / pylibmc_ops:.2f}x",
                    f"{med['min_share']:.2f}",
                    f"{med['max_share']:.2f}",
                    f"{med['starved']:.0f}",
                ]
            )
        print_markdown_table(
            f"Contention: 16 threads, 4 clients, one get per reservation "
            f"({reps} runs x {seconds:.1f} s, medians)",
            [
                "pool",
                "ops/s",
                "vs pylibmc",
                "slowest thread / mean",
                "fastest thread / mean",
                "threads starved",
            ],
            rows,
        )
        print(versions_line())
        if args.json:
            write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
