"""Draw the contention benchmark's JSON as the PNG the docs show.

    python benchmarks/bench_contention.py --json benchmarks/results/contention.json
    python benchmarks/plot.py benchmarks/results/contention.json \
        docs/_static/contention.png

Left: the longest and the 99th-percentile wait for a client, by thread count.
Right: how the reservations were shared among 16 threads (each thread's count
over the mean, sorted): a fair pool is a flat line at 1.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display needed

import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"mcpool": "#1f77b4", "pylibmc": "#d62728"}


def plot(results: dict[str, Any], out: str, share_threads: str = "16") -> None:
    by_threads = results["by_threads"]
    threads = sorted(by_threads, key=int)
    pools = list(by_threads[threads[0]])
    fig, (waits, shares) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)

    for name in pools:
        xs = [int(t) for t in threads]
        worst = [by_threads[t][name]["max_wait_us"] / 1000 for t in threads]
        p99 = [by_threads[t][name]["p99_wait_us"] / 1000 for t in threads]
        color = COLORS.get(name)
        waits.plot(xs, worst, "o-", color=color, label=f"{name}: longest wait")
        waits.plot(xs, p99, "s--", color=color, alpha=0.6, label=f"{name}: p99 wait")
    waits.set_xscale("log", base=2)
    waits.set_yscale("log")
    waits.set_xticks([int(t) for t in threads], labels=threads)
    waits.set_xlabel(f"threads sharing {results['clients']} clients")
    waits.set_ylabel("wait for a client (ms, log scale)")
    waits.set_title("Waiting for a client")
    waits.legend(fontsize=8)
    waits.grid(True, which="both", alpha=0.3)

    cell = by_threads[share_threads]
    for name in pools:
        values = cell[name]["shares"]
        shares.plot(
            range(1, len(values) + 1),
            values,
            "o-",
            color=COLORS.get(name),
            label=name,
        )
    shares.axhline(1.0, color="gray", linewidth=0.8)
    shares.set_xlabel(f"thread (sorted), {share_threads} threads")
    shares.set_ylabel("reservations / mean")
    shares.set_title("Who got the clients")
    shares.legend(fontsize=8)
    shares.grid(True, alpha=0.3)

    fig.suptitle(
        f"{results['clients']} clients, reserve + get + release in a loop "
        f"(medians of {results['runs']} runs x {results['seconds']:g} s; "
        f"python {results['python']}, pylibmc {results['pylibmc']})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="the JSON bench_contention.py wrote")
    parser.add_argument("out", help="the PNG to write")
    args = parser.parse_args()
    with open(args.results) as f:
        plot(json.load(f), args.out)


if __name__ == "__main__":
    main()
