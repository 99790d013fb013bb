"""End to end: the Flask example under gunicorn gthread, one memcached get per
request, driven from another process.

Run it from the repository root (it starts its own memcached on a free
loopback port, and one gunicorn per variant on free ports)::

    .venv/bin/python benchmarks/bench_wsgi.py             # 7 rounds of 3 s each
    .venv/bin/python benchmarks/bench_wsgi.py --quick     # a smoke run

The load comes from ``wrk`` (``apt-get install wrk``) when it is on PATH, or
else from a Python load generator in a separate process (``--python-load``
forces it). Each variant (see :mod:`wsgi_apps`) runs in its own gunicorn
(``-k gthread``, ``--workers``, ``--threads``, pool size = threads); all
of them are started first, then measured in turn, round after round, in a
new random order each round, so that drift on the machine spreads over every
variant. The table gives medians over rounds of requests/s, p99 latency and
server CPU time per request, the memcached connections each variant opened
per 1,000 requests, and ratios to connect-per-request and to hand-written
mcpool pool code.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcpool.testing import MemcachedServer, free_port  # noqa: E402

VARIANTS = {
    "connect per request": "connect",
    "pylibmc.ClientPool by hand": "pylibmc-pool",
    "mcpool.ClientPool by hand": "mcpool-pool",
    "mcpool extension (queue)": "extension",
}


class Gunicorn:
    """One gunicorn serving one variant on a free loopback port."""

    def __init__(
        self, mode: str, servers: str, workers: int, threads: int, pool: str
    ) -> None:
        self.mode = mode
        self.port = free_port()
        env = dict(
            os.environ,
            MCPOOL_SERVERS=servers,
            MCPOOL_POOL_SIZE=str(threads),
            MCPOOL_POOL=pool,
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "gthread",
                "-w",
                str(workers),
                "--threads",
                str(threads),
                "-b",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "warning",
                "--chdir",
                str(ROOT),
                f"benchmarks.wsgi_apps:create_app({mode!r})",
            ],
            env=env,
            cwd=ROOT,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn for {self.mode} exited early")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn for {self.mode} did not answer in {timeout}s")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the arbiter and its workers."""
        pids = [self.process.pid] + _children(self.process.pid)
        return sum(_cpu_seconds(pid) for pid in pids)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


# -- load generators -------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"can't read a latency from {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def load_with_wrk(port: int, connections: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",  # wrk takes whole seconds
            "--latency",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: (.*)"):
        found = re.search(pattern, out)
        if found:
            errors += sum(int(n) for n in re.findall(r"\d+", found.group(1)))
    return {"rps": rps, "p99": p99, "requests": requests, "errors": errors}


def load_with_python(port: int, connections: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--python-load-worker",
            str(port),
            str(connections),
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def python_load_worker(port: int, connections: int, seconds: float) -> None:
    """Keep-alive GETs from *connections* threads; print one JSON line."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    start = threading.Barrier(connections + 1)
    stop_at = [0.0]

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = latencies[n]
        start.wait()
        while True:
            began = time.perf_counter()
            if began >= stop_at[0]:
                break
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[n] += 1
            except (OSError, http.client.HTTPException):
                errors[n] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            mine.append(time.perf_counter() - began)
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    every = sorted(x for mine in latencies for x in mine)
    p99 = every[int(len(every) * 0.99)] if every else float("nan")
    print(
        json.dumps(
            {
                "rps": len(every) / elapsed,
                "p99": p99,
                "requests": len(every),
                "errors": sum(errors),
            }
        )
    )


# -- the run ---------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s")
    parser.add_argument("--seed", type=int, default=1, help="of the variant order")
    parser.add_argument("--python-load", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--python-load-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.python_load_worker:
        port, connections, seconds = args.python_load_worker
        python_load_worker(int(port), int(connections), float(seconds))
        return
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 1.0, 1.0

    use_wrk = shutil.which("wrk") is not None and not args.python_load
    load = load_with_wrk if use_wrk else load_with_python
    variants = dict(VARIANTS)
    pool_kinds = {name: "queue" for name in variants}
    if _has_thread_mapped_pool():
        variants["mcpool extension (thread)"] = "extension"
        pool_kinds["mcpool extension (thread)"] = "thread"

    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with MemcachedServer() as memcached:
        servers: dict[str, Gunicorn] = {}
        try:
            for name, mode in variants.items():
                servers[name] = Gunicorn(
                    mode,
                    memcached.address,
                    args.workers,
                    args.threads,
                    pool_kinds[name],
                )
            for server in servers.values():
                server.wait_ready()
            order = list(servers)
            shuffle = random.Random(args.seed).shuffle
            for _ in range(args.rounds):
                # A new order each round: a variant that always ran right
                # after another would inherit its after-effects (sockets in
                # TIME_WAIT, a warm or cold CPU cache, other tenants' load).
                shuffle(order)
                for name in order:
                    server = servers[name]
                    load(server.port, args.connections, args.warmup)
                    before = int(memcached.stats()["total_connections"])
                    cpu_before = server.cpu_seconds() + _cpu_seconds(memcached.pid)
                    result = load(server.port, args.connections, args.seconds)
                    cpu = server.cpu_seconds() + _cpu_seconds(memcached.pid)
                    opened = int(memcached.stats()["total_connections"]) - before - 1
                    requests = max(result["requests"], 1)
                    result["conns_per_1k"] = 1000 * opened / requests
                    result["cpu_us"] = 1e6 * (cpu - cpu_before) / requests
                    results[name].append(result)
        finally:
            for server in servers.values():
                server.stop()

    print_table(results, args, "wrk" if use_wrk else "Python load generator")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _has_thread_mapped_pool() -> bool:
    try:
        import mcpool

        return hasattr(mcpool, "ThreadMappedPool")
    except ImportError:  # pragma: no cover
        return False


COLUMNS = (
    "variant",
    "req/s",
    "p99 ms",
    "CPU us/req",
    "conns/1k req",
    "errors",
    "x connect",
    "x by hand",
    "CPU x by hand",
)


def table_rows(results: dict[str, list[dict[str, float]]]) -> list[list[str]]:
    def median(name: str, field: str) -> float:
        return statistics.median(r[field] for r in results[name])

    def paired(name: str, other: str, field: str) -> float:
        # The median of per-round ratios: both sides of each ratio were
        # measured seconds apart, so drift in the machine's load cancels.
        pairs = zip(results[name], results[other], strict=True)
        return statistics.median(a[field] / b[field] for a, b in pairs)

    connect, by_hand = "connect per request", "mcpool.ClientPool by hand"
    return [
        [
            name,
            f"{median(name, 'rps'):.0f}",
            f"{median(name, 'p99') * 1000:.2f}",
            f"{median(name, 'cpu_us'):.0f}",
            f"{median(name, 'conns_per_1k'):.1f}",
            str(sum(int(r["errors"]) for r in results[name])),
            f"{paired(name, connect, 'rps'):.2f}",
            f"{paired(name, by_hand, 'rps'):.3f}",
            f"{paired(name, by_hand, 'cpu_us'):.3f}",
        ]
        for name in results
    ]


NOTE = (
    "x connect, x by hand: req/s relative to connect-per-request and to "
    "mcpool.ClientPool by hand (median of per-round ratios). CPU us/req: CPU "
    "time of gunicorn (arbiter and workers) plus memcached per request served, "
    "the load generator excluded."
)


def print_table(
    results: dict[str, list[dict[str, float]]],
    args: argparse.Namespace,
    driver: str,
) -> None:
    title = (
        f"Flask example, GET / = one memcached get; gunicorn -k gthread "
        f"-w {args.workers} --threads {args.threads}; {driver}, "
        f"{args.connections} connections; median of {args.rounds} x "
        f"{args.seconds:g} s; Python {sys.version.split()[0]}"
    )
    rows = table_rows(results)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print(title)
    line = "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(COLUMNS, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for row in rows:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print(NOTE)
    if args.markdown:
        lines = [
            title,
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|---|" + "---:|" * (len(COLUMNS) - 1),
            *("| " + " | ".join(row) + " |" for row in rows),
            "",
            NOTE,
            "",
            "Command: .venv/bin/python benchmarks/bench_wsgi.py "
            + " ".join(sys.argv[1:]),
        ]
        args.markdown.write_text("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    main()
