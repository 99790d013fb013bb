"""mcpool.Client's server timeout: false alarms on a loaded machine against
the cost of a hung server, for several timeouts side by side.

Run: ``.venv/bin/python benchmarks/bench_timeout.py [--window 10] [--rounds 2]
[--burners 2] [--hammers 2] [--timeouts 0.1,0.25,0.5,1]``

While it runs, ``--burners`` processes burn CPU (two, as ``.ci/under-load``
does) and ``--hammers`` more send get+set to the healthy memcached server as
fast as they can. For
each timeout, in rounds that alternate the timeouts:

- **healthy**: 8 threads, each with its own clone of a ``mcpool.Client``
  with that timeout, send get+set over keys stored beforehand on the loaded
  server for ``--window`` seconds. A read that misses or a write that raises
  ``ServerUnavailable`` is a false alarm: the server was up and had the key.
  One timeout makes the client skip that server for ``retry_timeout`` (1 s),
  so a false alarm costs a second of misses for that client; the table counts
  the requests lost and the timeouts that started them (episodes).
- **hung**: a second server is paused (SIGSTOP); one thread reads keys that
  live on it for ``--window`` seconds. The table gives the slowest request,
  and the share of the thread's time spent waiting on the hung server: the
  client waits out the timeout, skips the server for ``retry_timeout``, and
  after ``failure_limit`` failures ejects it for ``dead_timeout``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from report import print_markdown_table, versions_line

from mcpool import Client, ServerUnavailable
from mcpool.testing import MemcachedServer, memcached_servers

TIMEOUTS = (0.1, 0.25, 0.5, 1.0)
THREADS = 8
KEYS = 1000

# Stops by itself when the benchmark is gone: it watches its parent's pid.
BURN = """
import os, sys
parent = int(sys.argv[1])
while os.getppid() == parent:
    for _ in range(100_000):
        pass
"""

HAMMER = """
import os, sys
import pylibmc
parent = int(sys.argv[1])
mc = pylibmc.Client([sys.argv[2]])
n = 0
while os.getppid() == parent:
    for _ in range(1000):
        n += 1
        mc.set(f"hammer:{n % 5000}", "x" * 100)
        mc.get(f"hammer:{(n * 7) % 5000}")
"""


def start_load(
    server: MemcachedServer, burners: int, hammers: int
) -> list[subprocess.Popen[bytes]]:
    parent = str(os.getpid())
    processes = []
    for _ in range(burners):
        processes.append(subprocess.Popen([sys.executable, "-c", BURN, parent]))
    for _ in range(hammers):
        processes.append(
            subprocess.Popen([sys.executable, "-c", HAMMER, parent, server.address])
        )
    return processes


def stop_load(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.wait()


def healthy(server: MemcachedServer, timeout: float, window: float) -> dict[str, Any]:
    master = Client([server.address], timeout=timeout)
    keys = [f"timeout:{n}" for n in range(KEYS)]
    setup = Client([server.address], timeout=10.0)
    for key in keys:
        setup.set(key, key)
    counts = {"requests": 0, "lost": 0, "episodes": 0}
    slowest = [0.0]
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def run(offset: int) -> None:
        mc = master.clone()
        requests = lost = episodes = 0
        worst = 0.0
        failing = False
        start.wait()
        deadline = time.monotonic() + window
        i = offset
        while time.monotonic() < deadline:
            key = keys[i % KEYS]
            i += 7
            for op in ("get", "set"):
                started = time.perf_counter()
                try:
                    ok = mc.get(key) == key if op == "get" else mc.set(key, key)
                except ServerUnavailable:
                    ok = False
                worst = max(worst, time.perf_counter() - started)
                requests += 1
                if not ok:
                    lost += 1
                    episodes += not failing
                failing = not ok
        with lock:
            counts["requests"] += requests
            counts["lost"] += lost
            counts["episodes"] += episodes
            slowest[0] = max(slowest[0], worst)

    threads = [threading.Thread(target=run, args=(n * 131,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {**counts, "slowest": slowest[0]}


def hung(
    live: MemcachedServer, paused: MemcachedServer, timeout: float, window: float
) -> dict[str, Any]:
    mc = Client([live.address, paused.address], timeout=timeout)
    keys = []
    n = 0
    while len(keys) < 50:
        key = f"hung:{n}"
        if mc.hash(key) == 1:
            keys.append(key)
        n += 1
    for key in keys:
        mc.set(key, key)
    paused.pause()
    try:
        latencies = []
        deadline = time.monotonic() + window
        started_all = time.perf_counter()
        i = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            mc.get(keys[i % len(keys)])
            latencies.append(time.perf_counter() - started)
            i += 1
        elapsed = time.perf_counter() - started_all
    finally:
        paused.resume()
    return {
        "requests": len(latencies),
        "slowest": max(latencies),
        "waiting": sum(t for t in latencies if t > timeout / 2) / elapsed,
        "stalls": sum(1 for t in latencies if t > timeout / 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--hammers", type=int, default=2)
    parser.add_argument(
        "--timeouts",
        default=",".join(map(str, TIMEOUTS)),
        help="seconds, comma-separated",
    )
    args = parser.parse_args()
    timeouts = [float(t) for t in args.timeouts.split(",")]
    if 0.25 not in timeouts:
        parser.error(
            "--timeouts must include 0.25, the default the others are set against"
        )
    results: dict[float, list[dict[str, Any]]] = {t: [] for t in timeouts}
    stalls: dict[float, list[dict[str, Any]]] = {t: [] for t in timeouts}
    with memcached_servers(2) as (server, other):
        load = start_load(server, args.burners, args.hammers)
        try:
            time.sleep(1.0)  # let the load settle
            for round_ in range(args.rounds):
                order = timeouts if round_ % 2 == 0 else timeouts[::-1]
                for timeout in order:
                    results[timeout].append(healthy(server, timeout, args.window))
                    stalls[timeout].append(hung(server, other, timeout, args.window))
                    print(
                        f"round {round_ + 1}, timeout {timeout}: "
                        f"{results[timeout][-1]} {stalls[timeout][-1]}",
                        file=sys.stderr,
                    )
        finally:
            stop_load(load)

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    base = median(stalls[0.25], "waiting")
    rows = []
    for timeout in timeouts:
        runs, hung_runs = results[timeout], stalls[timeout]
        requests = median(runs, "requests")
        lost = median(runs, "lost")
        rows.append(
            [
                f"{timeout:.2f} s",
                f"{requests:,.0f}",
                f"{median(runs, 'episodes'):.1f}",
                f"{lost:,.0f}",
                f"{lost / requests * 100:.3f} %",
                f"{median(runs, 'slowest'):.3f} s",
                f"{median(hung_runs, 'slowest'):.3f} s",
                f"{median(hung_runs, 'waiting') * 100:.1f} %",
                f"{median(hung_runs, 'waiting') / base:.2f}",
            ]
        )
    print_markdown_table(
        f"Server timeout: {THREADS} threads on a loaded healthy server for "
        f"{args.window:g} s, one thread on a hung one for {args.window:g} s "
        f"({args.rounds} rounds, medians; {args.burners} CPU burners, "
        f"{args.hammers} processes loading the server)",
        [
            "timeout",
            "healthy requests",
            "false timeouts",
            "requests lost",
            "lost share",
            "slowest healthy",
            "slowest on hung",
            "time waiting on hung",
            "waiting vs 0.25 s",
        ],
        rows,
    )
    print(versions_line("python", "pylibmc", "libmemcached"))


if __name__ == "__main__":
    main()
