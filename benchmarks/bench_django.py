"""Django's cache on memcached: the stock backends and mcpool's, side by side.

Run it from the repository root (it starts its own memcached on a free
loopback port, and each server on a free port)::

    .venv/bin/python benchmarks/bench_django.py            # 3 rounds
    .venv/bin/python benchmarks/bench_django.py --quick    # 1 round, 400 requests

Three backends (Django's ``PyLibMCCache`` and ``PyMemcacheCache``, and
``mcpool.django.PyLibMCCache`` with a pool of 4 per process) under two
servers: Django's ``runserver`` (wsgiref, a thread per request) and gunicorn
``-k gthread -w 2 --threads 4``. The view (``django_bench_site.py``) does
one cache ``get`` and one ``set``. Each round sends 2,000 requests from 16
threads, one HTTP connection per request, to each of the six set-ups in a
new random order. The table gives medians over rounds of requests/s, p99
latency, the memcached connections opened during the round (memcached's
``total_connections`` delta), errors and wrong values, and the ratio of
requests/s to the stock ``PyLibMCCache`` on the same server.

A second table measures the backends' own cost in this process, without
HTTP: a get and a set through Django's ``PyLibMCCache``, through mcpool's
(a reservation per call, as it ships), through one reservation for both (what
holding a client per request would cost), and a reservation alone.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from report import markdown_table  # noqa: E402

from mcpool.testing import MemcachedServer, free_port, server_stats  # noqa: E402

BACKENDS = {
    "stock PyLibMCCache": "django.core.cache.backends.memcached.PyLibMCCache",
    "stock PyMemcacheCache": "django.core.cache.backends.memcached.PyMemcacheCache",
    "mcpool.django.PyLibMCCache": "mcpool.django.PyLibMCCache",
}
SERVERS = ("runserver", "gunicorn gthread")
POOL_SIZE = 4
WORKERS = 2
THREADS_PER_WORKER = 4
KEYS = 100


def command(server: str, port: int) -> list[str]:
    if server == "runserver":
        return [
            sys.executable,
            "-m",
            "django",
            "runserver",
            f"127.0.0.1:{port}",
            "--noreload",
        ]
    return [
        str(Path(sys.executable).parent / "gunicorn"),
        "-k",
        "gthread",
        "--workers",
        str(WORKERS),
        "--threads",
        str(THREADS_PER_WORKER),
        "--bind",
        f"127.0.0.1:{port}",
        "django.core.wsgi:get_wsgi_application()",
    ]


def pool_bound(server: str) -> int:
    return POOL_SIZE * (1 if server == "runserver" else WORKERS)


@contextlib.contextmanager
def serving(server: str, backend: str, memcached: str, log: Path) -> Iterator[int]:
    port = free_port()
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="django_bench_site",
        BENCH_CACHE_BACKEND=backend,
        BENCH_MEMCACHED=memcached,
        BENCH_POOL_SIZE=str(POOL_SIZE),
        PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            command(server, port),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{server} with {backend} exited")
            with contextlib.suppress(OSError):
                if request(port, 0)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server} with {backend} did not start")
            time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def request(port: int, n: int) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", f"/?k={n}")
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def drive(port: int, requests: int, threads: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    wrong = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal wrong
        n = i % KEYS
        started = time.perf_counter()
        try:
            status, body = request(port, n)
        except OSError as exc:
            with lock:
                errors.append(repr(exc))
            return
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)
            if status != 200:
                errors.append(f"HTTP {status}")
            elif body not in ("miss", f"value-{n}"):
                wrong += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as executor:
        list(executor.map(one, range(requests)))
    seconds = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return {
        "rps": requests / seconds,
        "p99_ms": p99 * 1000,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "wrong": wrong,
    }


def total_connections(server: MemcachedServer) -> int:
    return int(server_stats(server.host, server.port)["total_connections"])


def measure_round(
    memcached: MemcachedServer, server: str, backend: str, requests: int, threads: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch, "server.log")
        with serving(server, backend, memcached.address, log) as port:
            before = total_connections(memcached)
            result = drive(port, requests, threads)
            # Each stats question opens a connection of its own.
            result["opened"] = total_connections(memcached) - before - 1
        if result["errors"]:
            # Every failure is shown with the server's side of it.
            tail = log.read_text(errors="replace").splitlines()[-30:]
            print(
                f"{server} / {backend}: {result['errors']} errors: "
                f"{result['error_kinds']}\n" + "\n".join(tail),
                file=sys.stderr,
            )
    return result


def per_call_vs_per_request(memcached: MemcachedServer, pairs: int) -> list[list[str]]:
    """us per get+set pair: Django's backend; mcpool's, reserving per call or
    once for both; and a reservation alone."""
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django.core.cache.backends.memcached import PyLibMCCache as Stock

    from mcpool.django import PyLibMCCache

    stock = Stock(memcached.address, {})
    options = {"POOL": {"max_size": 1}, "server_timeout": 5.0}
    cache = PyLibMCCache(memcached.address, {"OPTIONS": options})
    cache.set("pair", "value")
    pool = cache.pool

    def stock_backend() -> None:
        for _ in range(pairs):
            stock.get("pair")
            stock.set("pair", "value")

    def per_call() -> None:
        for _ in range(pairs):
            cache.get("pair")
            cache.set("pair", "value")

    def per_request() -> None:
        # What a backend holding one client per request would do per pair.
        for _ in range(pairs):
            with pool.reserve() as mc:
                mc.get(cache.make_and_validate_key("pair"))
                mc.set(
                    cache.make_and_validate_key("pair"),
                    "value",
                    cache.get_backend_timeout(),
                )

    def reserve_only() -> None:
        for _ in range(pairs):
            with pool.reserve():
                pass

    runs = {
        "Django's PyLibMCCache (a client of its own)": stock_backend,
        "mcpool, a reservation per call (as shipped)": per_call,
        "mcpool, one reservation per request": per_request,
        "a reserve + release alone": reserve_only,
    }
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(7):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            timings[name].append((time.perf_counter() - started) / pairs * 1e6)
    base = timings["Django's PyLibMCCache (a client of its own)"]
    rows = []
    for name in runs:
        ratio = statistics.median(
            t / b for t, b in zip(timings[name], base, strict=True)
        )
        rows.append([name, f"{statistics.median(timings[name]):.2f}", f"{ratio:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=10000, help="in-process")
    parser.add_argument("--quick", action="store_true", help="1 round of 400")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.pairs = 1, 400, 2000
    order = [(server, name) for server in SERVERS for name in BACKENDS]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in order}
    rng = random.Random(args.seed)
    with MemcachedServer() as memcached:
        for n in range(args.rounds):
            rng.shuffle(order)
            for server, name in order:
                result = measure_round(
                    memcached, server, BACKENDS[name], args.requests, args.threads
                )
                results[server, name].append(result)
                print(
                    f"round {n + 1}: {server:16} {name:28} "
                    f"{result['rps']:7.0f} req/s  p99 {result['p99_ms']:6.1f} ms  "
                    f"opened {result['opened']:5.0f}",
                    file=sys.stderr,
                )
        micro = per_call_vs_per_request(memcached, args.pairs)

    rows = []
    for server in SERVERS:
        stock = [r["rps"] for r in results[server, "stock PyLibMCCache"]]
        for name in BACKENDS:
            runs = results[server, name]
            ratio = statistics.median(
                r["rps"] / s for r, s in zip(runs, stock, strict=True)
            )
            rows.append(
                [
                    server,
                    name,
                    f"{statistics.median(r['rps'] for r in runs):.0f}",
                    f"{statistics.median(r['p99_ms'] for r in runs):.1f}",
                    f"{statistics.median(r['opened'] for r in runs):.0f}",
                    f"{pool_bound(server) if name.startswith('mcpool') else '-'}",
                    f"{sum(r['errors'] for r in runs):.0f}",
                    f"{sum(r['wrong'] for r in runs):.0f}",
                    f"{ratio:.2f}",
                ]
            )
    lines = [
        f"Django cache, GET = one cache get + one set; {args.requests} requests "
        f"from {args.threads} threads, a connection per request; median of "
        f"{args.rounds} rounds; Python {platform.python_version()}, "
        f"Django {_version('django')}, pylibmc {_version('pylibmc')}, "
        f"pymemcache {_version('pymemcache')}, gunicorn {_version('gunicorn')}",
        "",
        *markdown_table(
            [
                "server",
                "backend",
                "req/s",
                "p99 ms",
                "conns opened",
                "pool bound",
                "errors",
                "wrong",
                "x stock PyLibMCCache",
            ],
            rows,
            align="llrrrrrrr",
        ),
        "",
        "runserver: Django's development server (wsgiref, a thread per "
        f"request). gunicorn gthread: -w {WORKERS} --threads "
        f"{THREADS_PER_WORKER}. conns opened: memcached total_connections "
        "delta over the round. x stock: median of per-round ratios of req/s.",
        "",
        "In process, one thread, no HTTP: us per cache get + set pair, median "
        f"of 7 x {args.pairs}, interleaved; x stock: median of per-repetition "
        "ratios.",
        "",
        *markdown_table(["backend", "us per pair", "x stock"], micro),
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
