"""mcpool's demo: what the pool and the safe client do for a Flask app.

Run it with ``./run.sh demo`` (which installs what it needs: memcached, and
mcpool with pylibmc and Flask in ``.venv-demo``), or directly::

    python examples/demo.py [--threads 16] [--size 4] [--seconds 2] [--outage 6]

In about half a minute, against a memcached it starts on a free loopback
port, it shows:

1. a Flask app on the :mod:`mcpool.flask` extension, under load from many
   threads on a threaded server: throughput, latency, and a pool that never
   grows past its size;
2. the memcached server stopped (``SIGSTOP``: connections hang, as with a
   stuck or unreachable server) and started again under that load: reads
   miss, writes fail softly, latency stays bounded, and it recovers;
3. the same app and load on ``pylibmc.ClientPool`` with a plain
   ``pylibmc.Client``, for contrast: what it does when every client is busy
   and when the server hangs;
4. a hostile key (a key with a memcached command in it) refused by
   :class:`mcpool.Client`, and what a plain ``pylibmc.Client`` does with it.

Every figure is printed with a sentence of what it means. The exit status is
0 when the mcpool app answered every request and refused the hostile key.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote

import pylibmc
from flask import Flask, request
from werkzeug.serving import make_server

import mcpool
from mcpool.client import DEFAULT_TIMEOUT
from mcpool.flask import MemcachePool
from mcpool.testing import MemcachedServer

#: How many page counters the load spreads over.
PAGES = 200

#: A key that is also a second memcached command on the text protocol.
HOSTILE_KEY = "x\r\nflush_all"


# -- the two apps ---------------------------------------------------------------


def page_key(n: int) -> str:
    return f"demo:page:{n}"


def make_mcpool_app(address: str, size: int, server_timeout: float) -> Flask:
    """A page counter on the extension: the pool and the safe client."""
    app = Flask("demo_mcpool")
    app.config.update(
        MCPOOL_SERVERS=address,
        MCPOOL_POOL_SIZE=size,
        MCPOOL_SERVER_TIMEOUT=server_timeout,
        # Generous: a request waits this long for a free client at most.
        MCPOOL_POOL_TIMEOUT=10.0,
    )
    memcache = MemcachePool(app)

    @app.get("/page/<int:n>")
    def page(n: int) -> str:
        mc = memcache.client
        seen = mc.get(page_key(n))  # a miss when the server is unavailable
        try:
            mc.set(page_key(n), (seen or 0) + 1)
            wrote = "written"
        except mcpool.ServerUnavailable:
            wrote = "not-written"  # the page is served all the same
        return f"{'hit' if seen is not None else 'miss'} {wrote}"

    @app.get("/lookup")
    def lookup() -> str:
        return repr(memcache.client.get(request.args["key"]))

    @app.errorhandler(mcpool.InvalidKey)
    def refuse(exc: mcpool.InvalidKey) -> tuple[str, int]:
        return f"refused: {exc}", 400

    @app.errorhandler(Exception)
    def failed(exc: Exception) -> tuple[str, int]:
        return f"{type(exc).__module__}.{type(exc).__name__}", 500

    return app


def make_pylibmc_app(address: str, size: int) -> Flask:
    """The same page counter on pylibmc's own pool and client."""
    app = Flask("demo_pylibmc")
    pool = pylibmc.ClientPool(pylibmc.Client([address], binary=True), size)

    @app.get("/page/<int:n>")
    def page(n: int) -> str:
        with pool.reserve() as mc:  # pylibmc's default: block=False
            seen = mc.get(page_key(n))
            mc.set(page_key(n), (seen or 0) + 1)
        return f"{'hit' if seen is not None else 'miss'} written"

    @app.errorhandler(Exception)
    def failed(exc: Exception) -> tuple[str, int]:
        return f"{type(exc).__module__}.{type(exc).__name__}", 500

    return app


# -- serving and load -----------------------------------------------------------


class Served:
    """*app* on werkzeug's threaded server (a thread per request, as
    ``flask run`` does), on a free loopback port."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@dataclass
class Sample:
    sent: float  # time.perf_counter() when the request was sent
    latency: float  # seconds until the whole response was read
    status: int  # 0: no response (the connection failed)
    body: str

    @property
    def done(self) -> float:
        return self.sent + self.latency


class Load:
    """*threads* threads sending GET /page/N to *port*, one request after
    another, until the ``with`` block ends."""

    def __init__(self, port: int, threads: int) -> None:
        self.port = port
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,)) for n in range(threads)
        ]

    def _run(self, n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        i = n * 7
        while not self._stop.is_set():
            i += 1
            sent = time.perf_counter()
            try:
                conn.request("GET", f"/page/{i % PAGES}")
                response = conn.getresponse()
                status, body = response.status, response.read().decode()
            except OSError as exc:
                status, body = 0, type(exc).__name__
                conn.close()
            self.samples.append(Sample(sent, time.perf_counter() - sent, status, body))
        conn.close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@dataclass
class Phase:
    """A stretch of the run and its requests."""

    name: str
    start: float
    end: float
    samples: list[Sample]


def run_with_outage(
    memcached: MemcachedServer, port: int, threads: int, seconds: float, outage: float
) -> list[Phase]:
    """Load for *seconds*, the server stopped for *outage*, load for *seconds*."""
    with Load(port, threads) as load:
        started = time.perf_counter()
        time.sleep(seconds)
        paused = time.perf_counter()
        memcached.pause()
        try:
            time.sleep(outage)
        finally:
            memcached.resume()
        resumed = time.perf_counter()
        time.sleep(seconds)
        ended = time.perf_counter()
    # A request sent before the stop and answered after it belongs to the
    # stop, where its time was spent.
    samples = load.samples
    return [
        Phase("running", started, paused, [s for s in samples if s.done < paused]),
        Phase(
            "stopped",
            paused,
            resumed,
            [s for s in samples if s.done >= paused and s.sent < resumed],
        ),
        Phase("restarted", resumed, ended, [s for s in samples if s.sent >= resumed]),
    ]


# -- reporting ------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


PHASE_HEADER = (
    f"  {'server':<10} {'requests':>8} {'per s':>6} {'failed':>6} {'hits':>5}"
    f" {'unwritten':>9} {'median':>8} {'p99':>8} {'max':>8}"
)


def phase_line(phase: Phase) -> str:
    """One row under :data:`PHASE_HEADER`: requests, failures (not HTTP 200),
    reads that hit, writes that failed softly, latencies."""
    mine = phase.samples
    if not mine:
        return f"  {phase.name:<10} {0:>8}"
    latencies = [s.latency for s in mine]
    ok = [s for s in mine if s.status == 200]
    hits = sum(s.body.startswith("hit") for s in ok)
    unwritten = sum(s.body.endswith("not-written") for s in ok)
    rate = len(mine) / (phase.end - phase.start)
    return (
        f"  {phase.name:<10} {len(mine):>8} {rate:>6.0f} {len(mine) - len(ok):>6}"
        f" {100 * hits / max(1, len(ok)):>4.0f}% {unwritten:>9}"
        f" {ms(statistics.median(latencies)):>8}"
        f" {ms(percentile(latencies, 0.99)):>8} {ms(max(latencies)):>8}"
    )


def error_lines(samples: list[Sample]) -> list[str]:
    """A line per cause of failed requests, the most frequent first."""
    causes = Counter(
        s.body if s.status == 500 else f"HTTP {s.status}"
        for s in samples
        if s.status != 200
    )
    return [f"    {count:>6} x {cause}" for cause, count in causes.most_common()]


def serve_with_outage(
    app: Flask, memcached: MemcachedServer, args: argparse.Namespace
) -> tuple[list[Phase], list[Sample]]:
    """Serve *app*, drive it through :func:`run_with_outage`, print each
    phase and the causes of failed requests; the phases and all samples."""
    with Served(app) as served:
        phases = run_with_outage(
            memcached, served.port, args.threads, args.seconds, args.outage
        )
    samples = [s for phase in phases for s in phase.samples]
    say(PHASE_HEADER)
    for phase in phases:
        say(phase_line(phase))
    for line in error_lines(samples):
        say(line)
    return phases, samples


def first_after(samples: list[Sample], since: float, word: str) -> float | None:
    """Seconds from *since* until a request sent after it answered with *word*."""
    done = [
        s.sent + s.latency - since
        for s in samples
        if s.sent >= since and s.status == 200 and word in s.body.split()
    ]
    return min(done) if done else None


def say(text: str) -> None:
    print(text, flush=True)


def explain(text: str) -> None:
    # Wrapped by hand: the sentences are short.
    say(f"  -> {text}")


#: Seconds the child process of :func:`plain_client_lookup` gets for its
#: second request before it is killed.
PLAIN_CLIENT_WAIT = 2.0

# Run in a child process: after the injected command the client's connection
# is out of step with the server, and its next request (or freeing it) spins
# forever.
PLAIN_CLIENT = """
import sys, pylibmc
mc = pylibmc.Client([sys.argv[1]])  # pylibmc's defaults: the text protocol
print(repr(mc.get(sys.argv[2])), flush=True)
mc.set("demo:after", "1")
print("answered", flush=True)
"""


def plain_client_lookup(address: str, key: str) -> tuple[str, bool]:
    """What a plain ``pylibmc.Client`` returns for ``get(key)``, and whether
    its next request hung."""
    child = subprocess.Popen(
        [sys.executable, "-c", PLAIN_CLIENT, address, key],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    returned = child.stdout.readline().strip()
    try:
        child.communicate(timeout=PLAIN_CLIENT_WAIT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return returned, True
    return returned, False


# -- the demo -------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16, help="client threads")
    parser.add_argument("--size", type=int, default=4, help="clients in each pool")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="load before and after the outage"
    )
    parser.add_argument(
        "--outage",
        type=float,
        default=6.0,
        help="seconds the server stays stopped (pylibmc's own timeout is 5 s)",
    )
    parser.add_argument(
        "--server-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="mcpool.Client's timeout per memcached operation",
    )
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    with MemcachedServer() as memcached:
        address = memcached.address
        seed = pylibmc.Client([address])
        seed.set_multi({page_key(n): 0 for n in range(PAGES)})
        say(f"memcached on {address} (pid {memcached.pid})")
        say(
            f"{args.threads} threads send requests to a Flask page counter "
            f"(one get and one set per request) backed by {args.size} clients."
        )

        # 1 and 2: the extension, under load, through an outage --------------
        app = make_mcpool_app(address, args.size, args.server_timeout)
        pool = MemcachePool.get_state(app).pool
        say("")
        say(
            "1-2. mcpool.flask (mcpool.ClientPool of mcpool.Client, timeout "
            f"{args.server_timeout} s): {args.seconds:g} s of load, memcached "
            f"stopped (SIGSTOP) for {args.outage:g} s, {args.seconds:g} s after"
        )
        phases, samples = serve_with_outage(app, memcached, args)
        errors = sum(s.status != 200 for s in samples)
        stopped, restarted = phases[1], phases[2]
        stats = pool.stats()
        explain(
            f"{errors} requests failed. While the server was stopped, reads "
            "were misses and writes raised mcpool.ServerUnavailable, which the "
            "view caught: every page was still served."
        )
        if stopped.samples:
            explain(
                "The slowest request while it was stopped took "
                f"{ms(max(s.latency for s in stopped.samples))}: a hung server "
                f"costs a request about {args.server_timeout} s per operation "
                "until the client marks it failed, then nothing."
            )
        wrote = first_after(restarted.samples, restarted.start, "written")
        hit = first_after(restarted.samples, restarted.start, "hit")
        if wrote is not None and hit is not None:
            explain(
                f"Recovery: writes worked again {wrote:.2f} s after the server "
                f"came back, and reads hit from {hit:.2f} s (a failed server is "
                "retried after retry_timeout, 1 s, and its data was kept)."
            )
        else:
            explain("The server was not used again before the load stopped.")
        explain(
            f"Pool: {stats.created} clients made for {stats.reserves} requests "
            f"(never more than {stats.max_size}); {stats.waits} requests waited "
            f"for a client, the longest {ms(stats.max_wait)}; {stats.timeouts} "
            f"timed out; {stats.in_use} in use at the end."
        )
        ok = errors == 0 and stats.in_use == 0 and stats.created <= args.size

        # 3: pylibmc's own pool, for contrast ---------------------------------
        say("")
        say(
            "3. The same app and load on pylibmc.ClientPool of a plain "
            "pylibmc.Client(binary=True), reserved as pylibmc's docs show"
        )
        phases, samples = serve_with_outage(
            make_pylibmc_app(address, args.size), memcached, args
        )
        busy = sum(s.body == "_queue.Empty" for s in samples)
        stopped = phases[1]
        explain(
            f"{busy} requests failed with queue.Empty: pylibmc.ClientPool."
            "reserve() does not wait, so a request that comes while all "
            f"{args.size} clients are busy fails at once (a 500 here)."
        )
        broken = [s for s in samples if s.body.startswith("pylibmc.")]
        if broken:
            after = sum(s.sent >= phases[2].start for s in broken)
            explain(
                f"{len(broken)} requests failed with a pylibmc error: a read "
                "from a server that does not answer raises instead of missing, "
                f"so the view answered 500; {after} of them after the server "
                "was back."
            )
        if stopped.samples:
            explain(
                "The slowest request while the server was stopped took "
                f"{ms(max(s.latency for s in stopped.samples))}: a plain "
                "pylibmc.Client waits for a hung server up to libmemcached's "
                "own timeouts (seconds) and then raises, holding its client all "
                "that time; pylibmc's pool takes back a client that raised as "
                "it is."
            )

        # 4: a hostile key ----------------------------------------------------
        say("")
        say(f"4. A key taken from a request: {HOSTILE_KEY!r}")
        seed.set("demo:victim", "precious")
        with Served(app) as served:
            conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
            conn.request("GET", f"/lookup?key={quote(HOSTILE_KEY)}")
            response = conn.getresponse()
            answer = f"HTTP {response.status}: {response.read().decode()}"
            conn.close()
        kept = seed.get("demo:victim") == "precious"
        say(f"  mcpool.Client   {answer}")
        explain(
            "Refused before anything reached the server; the cache "
            f"{'still holds its items' if kept else 'LOST its items'}. "
            "mcpool.safe_key() maps any text to a valid key: "
            f"{mcpool.safe_key(HOSTILE_KEY)!r}."
        )
        ok = ok and response.status == 400 and kept
        returned, hung = plain_client_lookup(address, HOSTILE_KEY)
        erased = seed.get("demo:victim") is None
        say(
            f"  pylibmc.Client  get() returned {returned}; the cache "
            f"{'was emptied' if erased else 'kept its items'}"
            f"{', and its next request hung' if hung else ''}"
        )
        if erased:
            explain(
                "pylibmc sent the key as it was, and memcached read the rest "
                "of it as a second command, flush_all: every item is gone."
            )
        if hung:
            explain(
                "The extra reply left that client's connection out of step: "
                "its next request spun until the process was killed "
                f"({PLAIN_CLIENT_WAIT:g} s later)."
            )
        pool.close()

    say("")
    say("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
