"""End to end: the Flask example under gunicorn gthread, one memcached get per
request, driven from another process.

Run it from the repository root (it starts its own memcached on a free
loopback port, and one gunicorn per variant on free ports)::

    .venv/bin/python benchmarks/bench_wsgi.py             # 7 rounds of 3 s each
    .venv/bin/python benchmarks/bench_wsgi.py --quick     # a smoke run
    .venv/bin/python benchmarks/bench_wsgi.py --instructions 1000

The load comes from ``wrk`` (``apt-get install wrk``) when it is on PATH, or
else from a Python load generator in a separate process (``--python-load``
forces it). Each variant (see :mod:`wsgi_apps`) runs in its own gunicorn
(``-k gthread``, ``--workers``, ``--threads``, pool size = threads); all
of them are started first, then measured in turn, round after round, in a
new random order each round, so that drift on the machine spreads over every
variant. The table gives medians over rounds of requests/s, p99 latency and
server CPU time per request, the memcached connections each variant opened
per 1,000 requests, and ratios to connect-per-request and to the same pool
used by hand.

``--instructions N`` counts instead of timing: each variant's gunicorn (one
worker) runs under valgrind's callgrind and serves N requests in a row, and
the table gives the worker's instructions per request (the difference from
a run that served none, divided by N). The count is the same from one run to
the next, whatever else the machine does, so differences of a percent can be
seen where timings swing by ten; it leaves out the kernel (system calls,
TCP) and memcached, so it is the measure for comparing the extension with
hand-written pool code, not pooling with connect-per-request.
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

from report import markdown_table, write_json  # noqa: E402

from mcpool.testing import MemcachedServer, free_port  # noqa: E402

#: name -> (wsgi_apps mode, MCPOOL_POOL for the extension)
VARIANTS = {
    "Flask alone, no memcached": ("none", "queue"),
    "connect per request": ("connect", "queue"),
    "pylibmc.ClientPool by hand": ("pylibmc-pool", "queue"),
    "mcpool.ClientPool by hand": ("mcpool-pool", "queue"),
    "mcpool extension (queue)": ("extension", "queue"),
    "mcpool.ThreadMappedPool by hand": ("mcpool-thread-pool", "queue"),
    "mcpool extension (thread)": ("extension", "thread"),
}
CONNECT = "connect per request"
#: each variant's hand-written counterpart, for the "x by hand" columns
BY_HAND = {
    "mcpool extension (thread)": "mcpool.ThreadMappedPool by hand",
    "mcpool.ThreadMappedPool by hand": "mcpool.ThreadMappedPool by hand",
}
DEFAULT_BY_HAND = "mcpool.ClientPool by hand"


class Gunicorn:
    """One gunicorn serving one variant on a free loopback port."""

    def __init__(
        self,
        mode: str,
        servers: str,
        workers: int,
        threads: int,
        pool: str,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.mode = mode
        self.port = free_port()
        env = dict(
            os.environ,
            MCPOOL_SERVERS=servers,
            MCPOOL_POOL_SIZE=str(threads),
            MCPOOL_POOL=pool,
            PYTHONHASHSEED="0",  # the same start-up work in every run
        )
        self.process = subprocess.Popen(
            [
                *prefix,
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
            stderr=subprocess.PIPE if prefix else None,
            text=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
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

    def stop(self, timeout: float = 15) -> str:
        """Stop gunicorn; its standard error if it was captured."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err or ""


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
    parser.add_argument(
        "--instructions",
        type=int,
        metavar="N",
        help="count instructions per request over N requests (valgrind)",
    )
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
    if args.instructions:
        count_instructions(args)
        return

    use_wrk = shutil.which("wrk") is not None and not args.python_load
    load = load_with_wrk if use_wrk else load_with_python
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with MemcachedServer() as memcached:
        servers: dict[str, Gunicorn] = {}
        try:
            for name, (mode, pool_kind) in VARIANTS.items():
                servers[name] = Gunicorn(
                    mode, memcached.address, args.workers, args.threads, pool_kind
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

    driver = "wrk" if use_wrk else "Python load generator"
    title = (
        f"Flask example, GET / = one memcached get; gunicorn -k gthread "
        f"-w {args.workers} --threads {args.threads}; {driver}, "
        f"{args.connections} connections; median of {args.rounds} x "
        f"{args.seconds:g} s; Python {sys.version.split()[0]}"
    )
    print_table(title, COLUMNS, table_rows(results), NOTE, args.markdown)
    if args.json:
        write_json(args.json, results)


# -- instruction counts ------------------------------------------------------

_COLLECTED = re.compile(r"==(\d+)== Collected : (\d+)")


def worker_instructions(
    mode: str, pool_kind: str, servers: str, threads: int, requests: int
) -> int:
    """Instructions the gunicorn worker ran, from start to stop, having served
    one request to say it is ready and then *requests* more, one at a time on
    one keep-alive connection."""
    server = Gunicorn(
        mode,
        servers,
        1,
        threads,
        pool_kind,
        prefix=("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
    )
    try:
        server.wait_ready(timeout=300)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        for _ in range(requests):
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{mode}: HTTP {response.status}")
        conn.close()
    finally:
        err = server.stop(timeout=300)
    counts = {int(pid): int(n) for pid, n in _COLLECTED.findall(err)}
    counts.pop(server.process.pid, None)  # the arbiter
    if len(counts) != 1:
        raise RuntimeError(f"expected one worker's count from valgrind, got {counts}")
    return next(iter(counts.values()))


def count_instructions(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    per_request: dict[str, float] = {}
    with MemcachedServer() as memcached:
        for name, (mode, pool_kind) in VARIANTS.items():
            counts = [
                worker_instructions(mode, pool_kind, memcached.address, args.threads, n)
                for n in (0, args.instructions)
            ]
            per_request[name] = (counts[1] - counts[0]) / args.instructions
            print(f"  {name}: {per_request[name]:.0f}", file=sys.stderr)
    rows = []
    for name in VARIANTS:
        by_hand = BY_HAND.get(name, DEFAULT_BY_HAND)
        rows.append(
            [
                name,
                f"{per_request[name] / 1000:.1f}",
                f"{per_request[name] / per_request[CONNECT]:.3f}",
                f"{per_request[name] / per_request[by_hand]:.3f}",
            ]
        )
    title = (
        f"Flask example, GET / = one memcached get; gunicorn -k gthread -w 1 "
        f"--threads {args.threads} under callgrind; {args.instructions} requests "
        f"in a row; Python {sys.version.split()[0]}"
    )
    note = (
        "k instr/req: thousands of instructions the gunicorn worker ran per "
        "request (Flask, the pool, pylibmc and libmemcached, gunicorn's own "
        "work), the kernel and memcached excluded. x connect, x by hand: "
        "relative to connect-per-request and to the same pool kind used by "
        "hand in the view."
    )
    print_table(title, INSTRUCTION_COLUMNS, rows, note, args.markdown)
    if args.json:
        write_json(args.json, per_request)


# -- tables ------------------------------------------------------------------

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
INSTRUCTION_COLUMNS = ("variant", "k instr/req", "x connect", "x by hand")


def table_rows(results: dict[str, list[dict[str, float]]]) -> list[list[str]]:
    def median(name: str, field: str) -> float:
        return statistics.median(r[field] for r in results[name])

    def paired(name: str, other: str, field: str) -> float:
        # The median of per-round ratios: both sides of each ratio were
        # measured seconds apart, so drift in the machine's load cancels.
        pairs = zip(results[name], results[other], strict=True)
        return statistics.median(a[field] / b[field] for a, b in pairs)

    rows = []
    for name in results:
        by_hand = BY_HAND.get(name, DEFAULT_BY_HAND)
        rows.append(
            [
                name,
                f"{median(name, 'rps'):.0f}",
                f"{median(name, 'p99') * 1000:.2f}",
                f"{median(name, 'cpu_us'):.0f}",
                f"{median(name, 'conns_per_1k'):.1f}",
                str(sum(int(r["errors"]) for r in results[name])),
                f"{paired(name, CONNECT, 'rps'):.2f}",
                f"{paired(name, by_hand, 'rps'):.3f}",
                f"{paired(name, by_hand, 'cpu_us'):.3f}",
            ]
        )
    return rows


NOTE = (
    "x connect, x by hand: req/s relative to connect-per-request and to the "
    "same pool kind used by hand in the view (median of per-round ratios). "
    "CPU us/req: CPU time of gunicorn (arbiter and workers) plus memcached "
    "per request served, the load generator excluded."
)


def print_table(
    title: str,
    columns: tuple[str, ...],
    rows: list[list[str]],
    note: str,
    markdown: Path | None,
) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(title)
    print(line(columns))
    print("-" * len(line(columns)))
    for row in rows:
        print(line(row))
    print(note)
    if markdown:
        lines = [
            title,
            "",
            *markdown_table(columns, rows),
            "",
            note,
            "",
            "Command: .venv/bin/python benchmarks/bench_wsgi.py "
            + " ".join(sys.argv[1:]),
        ]
        markdown.write_text("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    main()
