"""Replies/s of the Flask example: a thread per request vs pooled threads vs waitress.

Run it (it starts its own memcached and servers on free loopback ports)::

    .venv/bin/python benchmarks/bench_serving.py            # full run
    .venv/bin/python benchmarks/bench_serving.py --quick    # a smoke run

The app is the Flask example, ``examples.flask_app``: ``GET /`` is one
memcached ``get`` through the extension's :class:`mcpool.ClientPool`, and
its value is set to 16 KiB by default, the reply size of the old
measurement. Each server runs in a process of its own:

- ``thread per request``: Werkzeug's threaded server (``flask run``'s), a
  new thread for every connection;
- ``pooled threads``: :func:`mcpool.serving.make_server`, worker threads
  that outlive requests (``--workers`` at most);
- ``waitress``: its fixed pool of ``--workers`` threads behind an
  asynchronous accept/read loop.

The load comes from ``wrk`` in a process of its own (``--connections``
concurrent clients, each request on a new connection with
``Connection: close``, so that every request is a new thread for the
thread-per-request server), or from a Python load generator when ``wrk`` is
not installed. The servers take turns, round after round, and the table gives
medians; the ratio is computed in each round and its median printed next to
the old figure: 500 replies/s with a thread per request against 1500 with
pooled threads (100 clients, 16 KiB replies), 3.0x.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from report import print_markdown_table, write_json

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for examples.flask_app

SERVERS = {
    "thread per request": "werkzeug-threaded",
    "pooled threads": "mcpool-pooled",
    "waitress": "waitress",
}
OLD_RATIO = 1500 / 500


# -- the server process ------------------------------------------------------


def make_app(memcached: str) -> Any:
    """The Flask example (``examples.flask_app``): ``GET /`` is one memcached
    get of :data:`~examples.flask_app.GREETING_KEY` through its ClientPool."""
    from examples.flask_app import create_app

    # Enough clients that no request waits for one, whatever the server's
    # thread count: the pool makes them lazily.
    return create_app({"MCPOOL_SERVERS": [memcached], "MCPOOL_POOL_SIZE": 256})


def serve(kind: str, port: int, memcached: str, workers: int) -> None:
    """Serve the app with *kind* on *port* until SIGINT; print a JSON summary."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "queue depth"
    app = make_app(memcached)
    summary: dict[str, Any] = {"kind": kind}
    if kind == "werkzeug-threaded":
        from werkzeug.serving import make_server

        server = make_server("127.0.0.1", port, app, threaded=True)
        print("ready", flush=True)
        server.serve_forever()
    elif kind == "mcpool-pooled":
        from mcpool.serving import make_server as make_pooled_server

        pooled = make_pooled_server(
            app,
            "127.0.0.1",
            port,
            min_workers=2,
            max_workers=workers,
            min_spare_workers=1,
        )
        print("ready", flush=True)
        pooled.serve_forever()
        stats = pooled.worker_stats()
        summary.update(
            handled=stats.handled,
            threads_started=stats.started,
            peak_workers=stats.peak_workers,
        )
    elif kind == "waitress":
        import waitress

        wsgi_server = waitress.create_server(
            app, host="127.0.0.1", port=port, threads=workers, connection_limit=1000
        )
        print("ready", flush=True)
        try:
            wsgi_server.run()
        except KeyboardInterrupt:
            pass
    else:
        raise SystemExit(f"unknown server kind {kind!r}")
    print(json.dumps(summary), flush=True)


class ServerProcess:
    """One server in a child process, stopped by pid with SIGINT."""

    def __init__(self, kind: str, memcached: str, workers: int) -> None:
        from mcpool.testing import free_port

        self.port = free_port()
        # The server's stderr is kept aside and searched for tracebacks.
        self.stderr = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                kind,
                "--port",
                str(self.port),
                "--memcached",
                memcached,
                "--workers",
                str(workers),
            ],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError(f"the {kind} server did not start")
        wait_for_port(self.port)

    def stop(self) -> dict[str, Any]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            out, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        self.stderr.seek(0)
        errors = self.stderr.read()
        self.stderr.close()
        summary["tracebacks"] = errors.count("Traceback (most recent call last)")
        summary["stderr"] = errors[-2000:]
        return summary


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- the load ----------------------------------------------------------------


def wrk_load(port: int, connections: int, seconds: float) -> dict[str, float]:
    """Run wrk against the server; return replies/s and error counts."""
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-H",
            "Connection: close",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if requests is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")
    rate = float(requests.group(1))
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return {"replies_per_s": rate, "errors": errors}


def python_load(port: int, connections: int, seconds: float) -> dict[str, float]:
    """The fallback: a child process of client threads, a new connection each."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            str(port),
            "--connections",
            str(connections),
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def generate_load(port: int, connections: int, seconds: float) -> None:
    """Body of the Python load process: print replies/s and errors as JSON."""
    deadline = time.monotonic() + seconds
    counts = {"replies": 0, "errors": 0}
    lock = threading.Lock()

    def client() -> None:
        replies = errors = 0
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    replies += 1
                else:
                    errors += 1
            except OSError:
                errors += 1
            finally:
                conn.close()
        with lock:
            counts["replies"] += replies
            counts["errors"] += errors

    threads = [threading.Thread(target=client) for _ in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    print(
        json.dumps(
            {"replies_per_s": counts["replies"] / elapsed, "errors": counts["errors"]}
        )
    )


# -- the comparison ----------------------------------------------------------


def check_reply(port: int, value: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200 or body != value.encode():
        raise RuntimeError(f"bad reply on port {port}: {response.status} {body[:60]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--body-size", type=int, default=16 * 1024)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--python-load", action="store_true", help="ignore wrk")
    # The child processes' modes.
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--load", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memcached", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        serve(args.serve, args.port, args.memcached, args.workers)
        return 0
    if args.load:
        generate_load(args.load, args.connections, args.seconds)
        return 0

    import pylibmc

    from mcpool.testing import MemcachedServer

    if args.quick:
        args.rounds, args.seconds = 1, 1.0
    use_wrk = shutil.which("wrk") is not None and not args.python_load
    load = wrk_load if use_wrk else python_load
    value = os.urandom(args.body_size // 2).hex()[: args.body_size]

    samples: dict[str, list[dict[str, float]]] = {name: [] for name in SERVERS}
    summaries: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVERS}
    with MemcachedServer() as memcached:
        master = pylibmc.Client([memcached.address], binary=True)
        from examples.flask_app import GREETING_KEY

        master.set(GREETING_KEY, value)  # what GET / answers
        for round_number in range(args.rounds):
            for name, kind in SERVERS.items():
                server = ServerProcess(kind, memcached.address, args.workers)
                try:
                    check_reply(server.port, value)
                    load(server.port, args.connections, min(1.0, args.seconds))
                    result = load(server.port, args.connections, args.seconds)
                finally:
                    summary = server.stop()
                samples[name].append(result)
                summaries[name].append(summary)
                print(
                    f"round {round_number + 1}: {name}: "
                    f"{result['replies_per_s']:.0f} replies/s, "
                    f"{result['errors']:.0f} errors",
                    file=sys.stderr,
                )

    base = "thread per request"
    ratios = {
        name: statistics.median(
            s["replies_per_s"] / b["replies_per_s"]
            for s, b in zip(samples[name], samples[base], strict=True)
        )
        for name in SERVERS
    }
    results: dict[str, Any] = {"servers": {}, "old_ratio": OLD_RATIO}
    rows = []
    for name, runs in samples.items():
        rates = [r["replies_per_s"] for r in runs]
        errors = sum(r["errors"] for r in runs)
        tracebacks = sum(summary.get("tracebacks", 0) for summary in summaries[name])
        med = statistics.median(rates)
        results["servers"][name] = {
            "replies_per_s": med,
            "all": rates,
            "ratio": ratios[name],
            "errors": errors,
            "server_tracebacks": tracebacks,
        }
        rows.append(
            [
                name,
                f"{med:.0f}",
                f"{min(rates):.0f}",
                f"{max(rates):.0f}",
                f"{ratios[name]:.2f}x",
                f"{errors:.0f}",
                str(tracebacks),
            ]
        )
    generator = "wrk" if use_wrk else "a Python load process"
    print_markdown_table(
        f"Replies/s, {args.connections} concurrent clients ({generator}, a new "
        f"connection per request), {args.body_size // 1024} KiB replies, one "
        f"memcached get each; {args.rounds} rounds x {args.seconds:g} s, medians",
        [
            "server",
            "replies/s",
            "min",
            "max",
            "vs thread per request",
            "client errors",
            "server tracebacks",
        ],
        rows,
    )
    print(
        f"pooled threads / thread per request: {ratios['pooled threads']:.2f}x "
        f"here; the old measurement: 1500 / 500 = {OLD_RATIO:.1f}x"
    )
    for name, server_summaries in summaries.items():
        for summary in server_summaries:
            if summary.get("tracebacks"):
                print(
                    f"\n{name}'s stderr ends with:\n{summary['stderr']}",
                    file=sys.stderr,
                )
                break
    pooled = summaries["pooled threads"]
    if pooled and pooled[-1]:
        last = pooled[-1]
        print(
            f"pooled threads, last round: {last['handled']} requests on "
            f"{last['threads_started']} worker threads (peak {last['peak_workers']})"
        )
    print(
        f"\npython {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"--workers {args.workers}"
    )
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
