"""Waiting for a client: mcpool.ClientPool against pylibmc.ClientPool.

*T* threads share a pool of 4 clients; each loops over ``reserve`` + one
memcached ``get`` + release for a fixed time. For each pool and thread count
it records how long every reservation waited for its client and how many
reservations each thread got, and prints one table (medians over runs,
measured side by side in one process, runs interleaved):

    python benchmarks/bench_contention.py --json benchmarks/results/contention.json

``benchmarks/plot.py`` draws the JSON. ``--quick`` is a short smoke run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Any

import pylibmc
from report import median_by_key, print_markdown_table, versions_line, write_json

import mcpool
from mcpool.testing import MemcachedServer

CLIENTS = 4


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def run(pool: Any, threads: int, seconds: float) -> dict[str, Any]:
    """*threads* threads doing reserve + get for *seconds*; waits in µs."""
    waits: list[list[float]] = [[] for _ in range(threads)]
    stop = threading.Event()
    start = threading.Barrier(threads + 1)
    errors: list[BaseException] = []
    clock = time.perf_counter

    def worker(n: int) -> None:
        mine = waits[n]
        start.wait()
        try:
            while not stop.is_set():
                asked = clock()
                with pool.reserve(True) as mc:
                    mine.append(clock() - asked)
                    mc.get("bench:key")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    began = clock()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = clock() - began
    if errors:
        raise RuntimeError(f"a worker failed: {errors[0]!r}")
    done = [len(w) for w in waits]
    every = sorted(x * 1e6 for w in waits for x in w)
    mean = statistics.mean(done)
    return {
        "ops_per_s": sum(done) / elapsed,
        "p50_wait_us": percentile(every, 0.50),
        "p99_wait_us": percentile(every, 0.99),
        "max_wait_us": every[-1],
        "min_share": min(done) / mean,
        "max_share": max(done) / mean,
        "shares": sorted(d / mean for d in done),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    thread_counts = [4, 8, 16, 32]
    seconds, reps = (0.3, 1) if args.quick else (2.0, 3)

    results: dict[str, Any] = {
        "clients": CLIENTS,
        "seconds": seconds,
        "runs": reps,
        "python": sys.version.split()[0],
        "pylibmc": pylibmc.__version__,
        "by_threads": {},
    }
    with MemcachedServer() as server:
        master = pylibmc.Client([server.address], binary=True)
        master.set("bench:key", "x" * 100)
        makers = {
            "mcpool": lambda: mcpool.ClientPool(master, CLIENTS),
            "pylibmc": lambda: pylibmc.ClientPool(master, CLIENTS),
        }
        for threads in thread_counts:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in makers}
            for _ in range(reps):
                for name, make in makers.items():
                    runs[name].append(run(make(), threads, seconds))
            results["by_threads"][threads] = {
                name: median_of(rs) for name, rs in runs.items()
            }

    rows = []
    for threads, cell in results["by_threads"].items():
        for name, med in cell.items():
            ratio = med["ops_per_s"] / cell["pylibmc"]["ops_per_s"]
            rows.append(
                [
                    str(threads),
                    name,
                    f"{med['ops_per_s']:.0f}",
                    f"{ratio:.2f}x",
                    f"{med['p50_wait_us']:.1f}",
                    f"{med['p99_wait_us']:.0f}",
                    f"{med['max_wait_us'] / 1000:.1f}",
                    f"{med['min_share']:.2f}",
                ]
            )
    print_markdown_table(
        f"{CLIENTS} clients, T threads each doing reserve + get + release "
        f"({reps} runs x {seconds:.1f} s per cell, medians)",
        [
            "T",
            "pool",
            "ops/s",
            "ops/s vs pylibmc",
            "p50 wait µs",
            "p99 wait µs",
            "longest wait ms",
            "slowest thread / mean",
        ],
        rows,
        align="rlrrrrrr",
    )
    print(versions_line())
    if args.json:
        write_json(args.json, results)
    return 0


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number's median over the runs; the shares of the median-throughput run."""
    med: dict[str, Any] = median_by_key(runs, [k for k in runs[0] if k != "shares"])
    by_ops = sorted(runs, key=lambda r: r["ops_per_s"])
    med["shares"] = by_ops[len(by_ops) // 2]["shares"]
    return med


if __name__ == "__main__":
    sys.exit(main())
