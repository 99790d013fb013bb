"""What leak detection costs: reserve/release with and without ``leak_timeout``.

Times one ``with pool.reserve():`` round trip on an uncontended pool of plain
objects, with leak detection off and on, called from shallow and deep stacks
(recording the reserving stack costs more the deeper it is). Prints medians
of several runs and the ratio to the run with detection off, measured side by
side in one process.

    python benchmarks/bench_leak_detection.py [--repeat 7] [--number 20000]
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable

from report import print_markdown_table, versions_line

from mcpool import Pool


def at_depth(depth: int, body: Callable[[], None]) -> None:
    """Call *body* with *depth* extra frames on the stack."""
    if depth:
        at_depth(depth - 1, body)
    else:
        body()


def time_round_trip(
    leak_timeout: float | None, depth: int, number: int, repeat: int
) -> float:
    """Median seconds per reserve/release round trip."""
    pool: Pool[object] = Pool(object, 4, leak_timeout=leak_timeout)
    batch = 100

    def batch_of_round_trips() -> None:
        for _ in range(batch):
            with pool.reserve():
                pass

    runs = timeit.repeat(
        lambda: at_depth(depth, batch_of_round_trips),
        number=max(1, number // batch),
        repeat=repeat,
    )
    pool.close()
    return statistics.median(runs) / (max(1, number // batch) * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    rows = []
    for depth in (5, 40):
        base = time_round_trip(None, depth, args.number, args.repeat)
        on = time_round_trip(60.0, depth, args.number // 10, args.repeat)
        rows.append([str(depth), "None", f"{base * 1e6:.2f} µs", "1.0"])
        rows.append([str(depth), "60.0", f"{on * 1e6:.2f} µs", f"{on / base:.0f}"])
    print_markdown_table(
        f"Uncontended reserve+release of a plain object ({args.repeat} runs, "
        "medians), leak detection off and on",
        ["stack depth", "leak_timeout", "median per round trip", "ratio"],
        rows,
        align="rlrr",
    )
    print(versions_line("python"))


if __name__ == "__main__":
    main()
