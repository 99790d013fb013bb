"""What key validation costs per request, against a loopback memcached.

Run: ``.venv/bin/python benchmarks/bench_keys.py [--rounds 21] [--ops 2000]``

The same requests go through a plain ``pylibmc.Client`` and through
``mcpool.Client``, both with mcpool's behaviours (so only the Python layer
differs), in alternating rounds in one run. The table gives the median
microseconds per request over the rounds and the overhead of mcpool.Client
as a share of the plain request (the median of the ratios of each round,
where the two ran back to back). ``validate_key`` alone is timed too. The
target is an overhead of at most 5 % on a get.

``--baseline CHECKOUT`` adds the ``mcpool.Client`` of another checkout (a
copy of an older commit: ``git archive main mcpool | tar -x -C /tmp/before``)
to the same rounds, and a column with this checkout's time per request as a
share of that one's (the median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import pylibmc
from report import load_baseline, versions_line

from mcpool import Client, validate_key
from mcpool.client import DEFAULT_BEHAVIORS, timeout_behaviors
from mcpool.testing import MemcachedServer

KEY = "bench:user:1234567:profile"
TIMEOUT = 5.0
MULTI = [f"bench:multi:{i}" for i in range(10)]
PARTLY = MULTI[:9] + ["bench:absent"]


def per_op(run: Callable[[], Any], ops: int) -> float:
    """Microseconds per call of *run*, over *ops* calls."""
    started = time.perf_counter()
    for _ in range(ops):
        run()
    return (time.perf_counter() - started) / ops * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=61)
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="also time the mcpool.Client of the mcpool package in this directory",
    )
    args = parser.parse_args()

    with MemcachedServer() as server:
        # A generous timeout: on a loaded machine a loopback request can
        # stall past the default 0.25 s, and this measures the Python layer,
        # not failover.
        behaviors = dict(DEFAULT_BEHAVIORS, **timeout_behaviors(TIMEOUT))
        plain = pylibmc.Client([server.address], behaviors=behaviors)
        safe = Client([server.address], timeout=TIMEOUT)
        clients: dict[str, Any] = {"pylibmc": plain, "mcpool": safe}
        if args.baseline:
            baseline = load_baseline(args.baseline)
            clients["baseline"] = baseline.Client([server.address], timeout=TIMEOUT)
        plain.set(KEY, b"x" * 100)
        plain.set_multi({key: b"y" * 100 for key in MULTI})

        cases: list[tuple[str, Callable[[Any], Callable[[], Any]]]] = [
            ("get (hit, 100 B)", lambda mc: lambda: mc.get(KEY)),
            ("get (miss)", lambda mc: lambda: mc.get("bench:absent")),
            ("set (100 B)", lambda mc: lambda: mc.set(KEY, b"x" * 100)),
            ("get_multi (10 keys)", lambda mc: lambda: mc.get_multi(MULTI)),
            ("get_multi (1 of 10 miss)", lambda mc: lambda: mc.get_multi(PARTLY)),
        ]
        results: dict[str, dict[str, list[float]]] = {
            name: {client: [] for client in clients} for name, _ in cases
        }
        names = list(clients)
        check: list[float] = []
        for round_ in range(args.rounds):
            for name, make in cases:
                # Rotate which client goes first so drift hits all alike.
                shift = round_ % len(names)
                for client in names[shift:] + names[:shift]:
                    took = per_op(make(clients[client]), args.ops)
                    results[name][client].append(took)
            check.append(per_op(lambda: validate_key(KEY), args.ops * 10))

    print(
        f"{versions_line('pylibmc', 'libmemcached')}; "
        f"{args.rounds} rounds x {args.ops} requests each, median per request"
    )
    header = f"{'request':<26}{'pylibmc µs':>12}{'mcpool µs':>12}{'overhead':>10}"
    if args.baseline:
        header += f"{'baseline µs':>13}{'vs baseline':>13}"
    print(header)
    print("-" * len(header))
    for name, times in results.items():
        base = statistics.median(times["pylibmc"])
        ours = statistics.median(times["mcpool"])
        # The overhead is the median of the per-round ratios: the clients
        # ran back to back in each round, so load from other processes on
        # the machine cancels out better than in a ratio of medians.
        paired = statistics.median(
            s / p for p, s in zip(times["pylibmc"], times["mcpool"], strict=True)
        )
        line = f"{name:<26}{base:>12.2f}{ours:>12.2f}{paired - 1:>+10.1%}"
        if args.baseline:
            before = statistics.median(times["baseline"])
            against = statistics.median(
                s / b for b, s in zip(times["baseline"], times["mcpool"], strict=True)
            )
            line += f"{before:>13.2f}{against:>12.3f}x"
        print(line)
    get_hit = statistics.median(results["get (hit, 100 B)"]["pylibmc"])
    alone = statistics.median(check)
    print(f"validate_key alone: {alone:.3f} µs = {alone / get_hit:.1%} of a plain get")


if __name__ == "__main__":
    main()
