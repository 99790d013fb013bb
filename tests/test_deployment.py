"""Each deployment guide's server, run for real: the app under that server on
loopback, driven by concurrent requests, against a memcached of its own.

Every test starts the server as a subprocess on a free port exactly as the
guide in ``docs/deployment/`` says, sends 200 requests from 16 threads, and
checks that

- every request succeeded with the right body: half of them bump per-name
  counters, and each name's replies must be exactly 1..5, so a reply read
  from the wrong socket (a fork that shares a connection) cannot pass;
- the memcached server never saw more connections than the processes' pools
  allow, and no more were ever opened than that (no reconnect churn);

then stops the server by its pid.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mcpool.testing import MemcachedServer, free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FACTORY_MODULE = "examples.flask_app"
ENTRY = "deploy_app:application"  # tests/deploy_app.py: create_app() and more
GREETING = "hello from memcached"

REQUESTS = 200
THREADS = 16
HITS_PER_NAME = 5
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def tool(name: str) -> str:
    """A console script installed next to this interpreter."""
    path = BIN / name
    if not path.exists():
        raise pytest.UsageError(
            f"{path} is missing; install the dev extra: pip install -e '.[dev]'"
        )
    return str(path)


@dataclass(frozen=True)
class Deployment:
    """One server set-up from the deployment guides."""

    name: str
    #: the command line, given the port
    command: Callable[[int], list[str]]
    #: worker processes, each with a pool of its own
    processes: int
    #: MCPOOL_POOL_SIZE, the most clients per process
    pool_size: int
    #: connections opened before the workers fork (by the parent's pool)
    before_fork: int = 0
    #: what stops the server for good
    stop_signal: signal.Signals = signal.SIGTERM
    env: dict[str, str] = field(default_factory=dict)

    @property
    def max_connections(self) -> int:
        return self.processes * self.pool_size + self.before_fork


def werkzeug_threaded(port: int) -> list[str]:
    return [
        tool("flask"),
        "--app",
        FACTORY_MODULE,
        "run",
        "--with-threads",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def waitress(port: int) -> list[str]:
    return [
        tool("waitress-serve"),
        f"--listen=127.0.0.1:{port}",
        "--threads=8",
        "--call",
        f"{FACTORY_MODULE}:create_app",
    ]


def gunicorn(*options: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            tool("gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            *options,
            # The factory, as the guide says; --preload needs the entry
            # module that uses the pool before the fork.
            ENTRY if "--preload" in options else f"{FACTORY_MODULE}:create_app()",
        ]

    return command


def uwsgi(*options: str, entry: str = ENTRY) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            tool("uwsgi"),
            "--http-socket",
            f"127.0.0.1:{port}",
            "--master",
            "--processes",
            "2",
            "--threads",
            "4",
            "--home",
            sys.prefix,
            "--module",
            entry,
            "--need-app",
            "--disable-logging",
            *options,
        ]

    return command


def django_runserver(port: int) -> list[str]:
    # Django's development server: wsgiref with a thread per request.
    return [
        sys.executable,
        "-m",
        "django",
        "runserver",
        f"127.0.0.1:{port}",
        "--noreload",
        f"--settings={DJANGO_SETTINGS}",
    ]


def django_gunicorn(*options: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            tool("gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            *options,
            DJANGO_PRELOAD_ENTRY if "--preload" in options else DJANGO_ENTRY,
        ]

    return command


DJANGO_SETTINGS = "examples.django_site.settings"
DJANGO_ENTRY = "examples.django_site.wsgi:application"
DJANGO_PRELOAD_ENTRY = "deploy_django:application"  # tests/deploy_django.py

USE_POOL_AT_IMPORT = {"DEPLOY_USE_POOL_AT_IMPORT": "1"}
THREAD_MAPPED = {"MCPOOL_POOL": "thread"}

DEPLOYMENTS = [
    Deployment("werkzeug-threaded", werkzeug_threaded, processes=1, pool_size=4),
    Deployment("waitress", waitress, processes=1, pool_size=4),
    Deployment("gunicorn-sync", gunicorn("-k", "sync"), processes=2, pool_size=1),
    Deployment(
        "gunicorn-gthread",
        gunicorn("-k", "gthread", "--threads", "4"),
        processes=2,
        pool_size=4,
    ),
    Deployment(
        "gunicorn-preload",
        gunicorn("-k", "gthread", "--threads", "4", "--preload"),
        processes=2,
        pool_size=4,
        before_fork=1,
        env=USE_POOL_AT_IMPORT,
    ),
    Deployment(
        "uwsgi-processes-threads",
        uwsgi(),
        processes=2,
        pool_size=4,
        before_fork=1,
        stop_signal=signal.SIGINT,
        env=USE_POOL_AT_IMPORT,
    ),
    Deployment(
        "uwsgi-lazy-apps",
        uwsgi("--lazy-apps"),
        processes=2,
        pool_size=4,
        stop_signal=signal.SIGINT,
        env=USE_POOL_AT_IMPORT,
    ),
    # The same servers with the extension's thread-mapped pool (MCPOOL_POOL =
    # "thread", capped at MCPOOL_POOL_SIZE): a client bound to each thread,
    # given back when the thread ends.
    Deployment(
        "werkzeug-threaded-threadmapped",
        werkzeug_threaded,
        processes=1,
        pool_size=4,
        env=THREAD_MAPPED,
    ),
    Deployment(
        "gunicorn-gthread-threadmapped",
        gunicorn("-k", "gthread", "--threads", "4"),
        processes=2,
        pool_size=4,
        env=THREAD_MAPPED,
    ),
    Deployment(
        "uwsgi-threadmapped",
        uwsgi(),
        processes=2,
        pool_size=4,
        before_fork=1,
        stop_signal=signal.SIGINT,
        env={**USE_POOL_AT_IMPORT, **THREAD_MAPPED},
    ),
    # The Django example project (examples/django_site, mcpool.django's
    # backend), with the same routes and the same environment variables.
    Deployment("django-runserver", django_runserver, processes=1, pool_size=4),
    Deployment(
        "django-gunicorn-gthread",
        django_gunicorn("-k", "gthread", "--threads", "4"),
        processes=2,
        pool_size=4,
    ),
    Deployment(
        "django-gunicorn-preload",
        django_gunicorn("-k", "gthread", "--threads", "4", "--preload"),
        processes=2,
        pool_size=4,
        before_fork=1,
        env=USE_POOL_AT_IMPORT,
    ),
    Deployment(
        "django-uwsgi",
        uwsgi(entry=DJANGO_PRELOAD_ENTRY),
        processes=2,
        pool_size=4,
        before_fork=1,
        stop_signal=signal.SIGINT,
        env=USE_POOL_AT_IMPORT,
    ),
    Deployment(
        "gunicorn-gevent",
        gunicorn("-k", "gevent", "--worker-connections", "100"),
        processes=2,
        pool_size=4,
    ),
]


class ConnectionWatch:
    """Samples the memcached server's connection counts while a run goes on.

    It asks over one connection of its own, held open from start to end, so
    that its questions add nothing to ``total_connections`` and a question's
    connection never lingers in ``curr_connections`` while the server closes
    it.
    """

    def __init__(self, server: MemcachedServer) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self._asking = threading.Lock()
        first = self.read()
        self.base_current = int(first["curr_connections"])
        self.base_total = int(first["total_connections"])
        self.peak = self.base_current
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> dict[str, str]:
        with self._asking:
            self.sock.sendall(b"stats\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("memcached closed the stats connection")
                reply += chunk
        stats = {}
        for line in reply.decode().splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                stats[parts[1]] = parts[2]
        return stats

    def sample(self) -> None:
        self.peak = max(self.peak, int(self.read()["curr_connections"]))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def opened(self) -> int:
        """Connections opened by others since the watch began."""
        return int(self.read()["total_connections"]) - self.base_total

    def close(self) -> None:
        self.sock.close()


def get(port: int, path: str, timeout: float = 30.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@contextlib.contextmanager
def running(
    deployment: Deployment, port: int, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the server, wait until it answers, stop it by pid afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            deployment.command(port),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_serving(process, port, log)
        yield process
    finally:
        stop(process, deployment.stop_signal)


def wait_until_serving(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError):
            status, body = get(port, "/", timeout=5.0)
            if status == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"the server did not answer within {START_TIMEOUT} s:\n{tail(log)}")


def stop(process: subprocess.Popen[bytes], stop_signal: signal.Signals) -> None:
    """Stop the server by its pid; then end any of its workers left behind.

    The server runs in a session of its own, so its process group holds only
    the processes this test started.
    """
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def drive(port: int, run_id: str) -> tuple[list[str], dict[str, list[int]]]:
    """200 requests from 16 threads: half ``GET /``, half ``GET /count/<name>``
    with 20 names hit 5 times each. Returns the errors and each name's counts."""
    names = [f"{run_id}-{n}" for n in range(REQUESTS // 2 // HITS_PER_NAME)]
    paths = []
    for _ in range(HITS_PER_NAME):
        for name in names:
            paths.append(f"/count/{name}")
            paths.append("/")
    errors: list[str] = []
    counts: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def one(path: str) -> None:
        try:
            status, body = get(port, path)
        except Exception as exc:  # the test reports every failure, of any kind
            with lock:
                errors.append(f"{path}: {exc!r}")
            return
        with lock:
            if status != 200:
                errors.append(f"{path}: HTTP {status}: {body[:200]!r}")
            elif path == "/":
                if body != GREETING:
                    errors.append(f"{path}: unexpected body {body[:200]!r}")
            else:
                name = path.removeprefix("/count/")
                prefix = f"{name}: "
                if not body.startswith(prefix):
                    errors.append(f"{path}: unexpected body {body[:200]!r}")
                else:
                    counts[name].append(int(body[len(prefix) :]))

    with ThreadPoolExecutor(THREADS) as executor:
        list(executor.map(one, paths))
    return errors, counts


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d.name)
def test_app_serves_concurrent_requests_with_bounded_connections(
    deployment: Deployment, fresh_memcached: MemcachedServer, tmp_path: Path
) -> None:
    port = free_port()
    env = dict(
        os.environ,
        MCPOOL_SERVERS=fresh_memcached.address,
        MCPOOL_POOL_SIZE=str(deployment.pool_size),
        # Generous limits: on a busy machine a request may wait long for a
        # client or a reply, and neither timing out is what this test is about.
        MCPOOL_POOL_TIMEOUT="60",
        MCPOOL_SERVER_TIMEOUT="10",
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
        PYTHONUNBUFFERED="1",
        **deployment.env,
    )
    env.pop("PYTEST_CURRENT_TEST", None)
    log = tmp_path / "server.log"
    run_id = uuid.uuid4().hex[:8]

    watch = ConnectionWatch(fresh_memcached)
    try:
        with running(deployment, port, env, log), watch:
            errors, counts = drive(port, run_id)
        opened = watch.opened()
    finally:
        watch.close()

    assert not errors, f"{len(errors)} failed requests, e.g. {errors[:5]}\n{tail(log)}"
    wrong = {
        name: sorted(seen)
        for name, seen in counts.items()
        if sorted(seen) != list(range(1, HITS_PER_NAME + 1))
    }
    assert len(counts) == REQUESTS // 2 // HITS_PER_NAME and not wrong, wrong
    peak = watch.peak - watch.base_current
    assert 0 < peak <= deployment.max_connections, (
        f"{peak} connections at once; the pools allow {deployment.max_connections}"
    )
    assert 0 < opened <= deployment.max_connections, (
        f"{opened} connections opened; the pools allow {deployment.max_connections}"
        f"\n{tail(log)}"
    )


def test_the_uwsgi_and_gunicorn_tools_are_installed() -> None:
    # A missing server would otherwise show up as a confusing start failure.
    for name in ("gunicorn", "waitress-serve", "uwsgi"):
        assert shutil.which(name, path=str(BIN)), f"{name} is not installed"


GREENLETS = """
from gevent import monkey

monkey.patch_all()

import sys

import gevent
import pylibmc

from mcpool import ClientPool

pool = ClientPool(pylibmc.Client([sys.argv[1]], binary=True), 2, timeout=30)


def one(n):
    with pool.reserve() as mc:
        mc.set(f"greenlet:{n}", n)
        gevent.sleep(0.005)  # other I/O while holding the client: others run
        assert mc.get(f"greenlet:{n}") == n
    return n


jobs = [gevent.spawn(one, n) for n in range(50)]
gevent.joinall(jobs, raise_error=True)
s = pool.stats()
assert sorted(job.value for job in jobs) == list(range(50))
print(s.created, s.waits, s.timeouts)
"""


def test_greenlets_wait_in_line_for_a_bounded_pool_under_gevent(
    fresh_memcached: MemcachedServer,
) -> None:
    # The gevent guide's claim: after monkey-patching, 50 greenlets share a
    # pool of 2 clients, waiting cooperatively, with 2 connections in all.
    watch = ConnectionWatch(fresh_memcached)
    try:
        result = subprocess.run(
            [sys.executable, "-c", GREENLETS, fresh_memcached.address],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        opened = watch.opened()
    finally:
        watch.close()
    assert result.returncode == 0, result.stderr
    created, waits, timeouts = map(int, result.stdout.split())
    assert (created, timeouts) == (2, 0)
    assert waits > 0
    assert opened == 2
