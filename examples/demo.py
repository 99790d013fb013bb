"""mcpool's demo: a WSGI app on a pool, under load from many threads.

Run it with ``./run.sh demo`` (which installs what is missing), or directly::

    .venv/bin/python examples/demo.py [--threads 16] [--requests 4000] [--size 4]
        [--server-timeout 0.25]

It starts a memcached on a free loopback port, serves a small WSGI app on a
pool of safe clients through :class:`mcpool.PoolMiddleware`, on a threaded
werkzeug server (a new thread per request, as ``flask run`` does),
sends requests from many client threads, and prints what the pool saw:
its stats, the memcached server's connection count, and any errors.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import statistics
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from werkzeug.serving import make_server

from mcpool import Client, ClientPool, PoolMiddleware, safe_key
from mcpool.client import DEFAULT_TIMEOUT
from mcpool.testing import MemcachedServer


def make_app(pool: ClientPool[Client]) -> Any:
    """A page counter on the middleware: each request bumps and reads a count.

    The request's client is reserved on its first use and goes back to the
    pool when the server closes the response.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        # Never put a raw URL path into a key: safe_key maps any text to one.
        key = safe_key(path, prefix="hits:")
        mc = environ["mcpool.client"]
        mc.add(key, 0)  # no-op when the counter exists
        hits = mc.incr(key)
        body = f"{path} has been seen {hits} times\n".encode()
        start_response(
            "200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return PoolMiddleware(app, pool)


def drive(host: str, port: int, threads: int, requests: int) -> tuple[list[float], int]:
    """Send *requests* GETs from *threads* threads; return latencies and errors."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    per_thread = requests // threads

    def client(n: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection(host, port, timeout=10)
        mine: list[float] = []
        failed = 0
        for i in range(per_thread):
            started = time.perf_counter()
            try:
                conn.request("GET", f"/page/{(n * per_thread + i) % 50}")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    failed += 1
            except OSError:
                failed += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
            mine.append(time.perf_counter() - started)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += failed

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies, errors


def main() -> int:
    parser = argparse.ArgumentParser(description="mcpool demo")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--size", type=int, default=4, help="pool size")
    parser.add_argument(
        "--server-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds per memcached operation (mcpool.Client's timeout)",
    )
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    with MemcachedServer() as memcached:
        print(f"memcached {memcached.address} (pid {memcached.pid})")
        # The safe client.
        master = Client([memcached.address], timeout=args.server_timeout)
        pool = ClientPool(master, args.size, timeout=5.0, name="demo")
        server = make_server("127.0.0.1", 0, make_app(pool), threaded=True)
        host, port = str(server.server_address[0]), int(server.server_address[1])
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        print(f"app on http://{host}:{port}/ with a pool of {args.size} clients")
        print(f"{args.threads} client threads send {args.requests} requests ...")
        started = time.perf_counter()
        latencies, errors = drive(host, port, args.threads, args.requests)
        elapsed = time.perf_counter() - started
        server.shutdown()
        server.server_close()
        stats = pool.stats()
        connections = memcached.stats()["curr_connections"]
        pool.close()

    latencies.sort()
    print()
    print(
        f"requests      {len(latencies)} in {elapsed:.2f} s "
        f"({len(latencies) / elapsed:.0f}/s), errors {errors}"
    )
    print(
        f"latency       median {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.2f} ms"
    )
    print(
        f"memcached     {connections} connections open at the end "
        "(the pool's clients plus this check)"
    )
    print("pool stats")
    for field, value in vars(stats).items():
        shown = f"{value:.4f} s" if isinstance(value, float) else value
        print(f"  {field:<12} {shown}")
    ok = errors == 0 and stats.created <= args.size and stats.in_use == 0
    print()
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
