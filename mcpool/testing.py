"""Real memcached servers on loopback, for tests, examples and benchmarks.

:class:`MemcachedServer` starts the ``memcached`` binary on a free loopback
port, waits until it answers, and stops it by pid. It can pause
(``SIGSTOP``), resume, kill and restart the server on the same port, which is
what failover tests need.

.. code-block:: python

    from mcpool.testing import MemcachedServer

    with MemcachedServer() as server:
        mc = pylibmc.Client([server.address])
        mc.set("k", "v")

The module has no test-framework dependency; ``tests/conftest.py`` wraps it
in pytest fixtures.

On Linux a server never outlives the process that started it: the kernel
kills it when that process ends, however it ends (``SIGKILL`` included), so a
killed test run leaves no ``memcached`` behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

__all__ = [
    "MemcachedNotInstalled",
    "MemcachedServer",
    "Twemproxy",
    "free_port",
    "memcached_servers",
    "server_stats",
]

INSTALL_HINT = (
    "the memcached server binary was not found on PATH; install it from the "
    "system packages (Debian/Ubuntu: 'apt-get install memcached') or run "
    "'./run.sh test', which installs it"
)


class MemcachedNotInstalled(RuntimeError):
    """The ``memcached`` binary is not on ``PATH``; the message says how to
    install it."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on *host* that nothing listens on right now.

    Another process may take it before it is used; :class:`MemcachedServer`
    retries with a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _ask(host: str, port: int, command: bytes, timeout: float = 1.0) -> bytes:
    """Send one text-protocol command and read up to ``END``/the first line."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(command)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return reply
            reply += chunk
            if command.startswith(b"stats") and reply.endswith(b"END\r\n"):
                return reply
            if not command.startswith(b"stats") and reply.endswith(b"\r\n"):
                return reply


def server_stats(host: str, port: int, timeout: float = 1.0) -> dict[str, str]:
    """Return the server's ``stats`` as a dict of strings, over a fresh socket.

    >>> server_stats("127.0.0.1", server.port)["curr_connections"]  # doctest: +SKIP
    '2'
    """
    reply = _ask(host, port, b"stats\r\n", timeout)
    stats: dict[str, str] = {}
    for line in reply.decode("ascii", "replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            stats[parts[1]] = parts[2]
    return stats


# Servers die with the process that started them: Linux's parent-death
# signal, set with prctl(PR_SET_PDEATHSIG, SIGKILL) in the child between fork
# and exec. The kernel sends it when the *thread* that forked the child ends,
# not the process, so a server must be forked by a thread that lives as long
# as the process: the main thread, or else one long-lived spawner thread
# (a server started from a short-lived thread would die with that thread).
# prctl runs in a preexec_fn rather than through "setpriv --pdeathsig" so that
# it needs no extra binary and can close a race in the same place: if the
# parent died before prctl ran, the signal will never come, and getppid()
# tells, so the child exits instead of starting a server nobody owns.
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no libc with prctl: servers may outlive us
        return None
    return prctl


_prctl = _load_prctl()


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """The ``preexec_fn`` that makes the child die with *parent*, or ``None``
    where that is not possible (the server then lives until stopped)."""
    prctl = _prctl
    if prctl is None:
        return None
    death_signal = ctypes.c_ulong(signal.SIGKILL)

    def set_death_signal() -> None:
        if prctl(_PR_SET_PDEATHSIG, death_signal) == 0 and os.getppid() != parent:
            os._exit(1)  # the parent is already gone

    return set_death_signal


class _Spawn:
    """One Popen call to be made by the spawner thread."""

    def __init__(self, args: list[str], options: dict[str, Any]) -> None:
        self.args = args
        self.options = options
        self.done = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.error: BaseException | None = None


class _Spawner:
    """Starts processes from the main thread, or from one daemon thread that
    lives as long as the process, so that their parent-death signal comes
    when the process ends and never when a short-lived thread does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spawns: queue.SimpleQueue[_Spawn] | None = None
        self._pid = 0

    def popen(self, args: list[str], **options: Any) -> subprocess.Popen[bytes]:
        options["preexec_fn"] = _die_with_parent(os.getpid())
        if (
            options["preexec_fn"] is None
            or threading.current_thread() is threading.main_thread()
        ):
            return subprocess.Popen(args, **options)
        with self._lock:
            # A forked child has none of the parent's threads: it needs its own.
            if self._spawns is None or self._pid != os.getpid():
                self._spawns = queue.SimpleQueue()
                self._pid = os.getpid()
                threading.Thread(
                    target=self._run,
                    args=(self._spawns,),
                    name="mcpool-testing-spawner",
                    daemon=True,
                ).start()
            spawns = self._spawns
        spawn = _Spawn(args, options)
        spawns.put(spawn)
        spawn.done.wait()
        if spawn.error is not None:
            raise spawn.error
        assert spawn.process is not None
        return spawn.process

    @staticmethod
    def _run(spawns: queue.SimpleQueue[_Spawn]) -> None:
        while True:
            spawn = spawns.get()
            try:
                spawn.process = subprocess.Popen(spawn.args, **spawn.options)
            except BaseException as exc:  # handed to the caller, raised there
                spawn.error = exc
            spawn.done.set()


_spawner = _Spawner()


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of *pid* is in the stopped state (``T``)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        states = []
        for task in tasks:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                # The state follows the command name, which is in parentheses.
                states.append(stat.read().rpartition(")")[2].split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return True  # gone: nothing answers
    return all(state == "T" for state in states)


class MemcachedServer:
    """One ``memcached`` process on a loopback port, owned by this object.

    :param port: the port; a free one is chosen when ``None``.
    :param host: the loopback address to listen on.
    :param extra_args: more command-line arguments (``["-S"]`` for SASL,
        ``["-I", "2m"]`` for a larger item size).
    :param env: extra environment variables for the process (``SASL_CONF_PATH``).
    :raises MemcachedNotInstalled: if the binary is missing.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        memory_mb: int = 64,
    ) -> None:
        binary = shutil.which("memcached")
        if binary is None:
            raise MemcachedNotInstalled(INSTALL_HINT)
        self.binary = binary
        self.host = host
        self._fixed_port = port
        self.port = port or 0
        self.extra_args = list(extra_args)
        self.env = env
        self.memory_mb = memory_mb
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port``, as pylibmc takes it."""
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The pid of the running process."""
        if self.process is None:
            raise RuntimeError("the server is not running")
        return self.process.pid

    def _command(self) -> list[str]:
        cmd = [self.binary, "-l", self.host, "-p", str(self.port), "-U", "0"]
        cmd += ["-m", str(self.memory_mb), "-t", "2", "-c", "16384"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        return cmd + self.extra_args

    def start(self, timeout: float = 10.0) -> MemcachedServer:
        """Start the process and wait until it answers ``version``."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"memcached already running as pid {self.pid}")
        attempts = 1 if self._fixed_port else 5
        for _ in range(attempts):
            if not self._fixed_port:
                self.port = free_port(self.host)
            env = dict(os.environ, **(self.env or {}))
            self.process = _spawner.popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
            )
            if self._wait_ready(timeout):
                return self
        assert self.process is not None
        stderr = self.process.stderr
        err = stderr.read().decode() if stderr and not stderr.closed else ""
        raise RuntimeError(
            f"memcached on {self.address} did not come up within {timeout}s: {err}"
        )

    def _wait_ready(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # most likely the port was taken: try another
            with contextlib.suppress(OSError):
                if self._answers_version():
                    # Pin the port so restart() comes back on the same one.
                    self._fixed_port = self.port
                    return True
            time.sleep(0.01)
        self.kill()
        return False

    def _answers_version(self) -> bool:
        if "-S" in self.extra_args:
            # With SASL on, memcached speaks only the binary protocol; its
            # version request needs no authentication.
            request = struct.pack(">BBHBBHIIQ", 0x80, 0x0B, 0, 0, 0, 0, 0, 0, 0)
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(request)
                return sock.recv(24)[:2] == b"\x81\x0b"
        return _ask(self.host, self.port, b"version\r\n").startswith(b"VERSION")

    def stats(self) -> dict[str, str]:
        """The server's ``stats``."""
        return server_stats(self.host, self.port)

    def pause(self) -> None:
        """``SIGSTOP`` the process: connections hang, nothing is refused.

        Returns once every thread of the server has stopped: the signal is
        delivered asynchronously, and a request sent just after ``kill()``
        returned could otherwise still be answered.
        """
        os.kill(self.pid, signal.SIGSTOP)
        while not _all_threads_stopped(self.pid):
            time.sleep(0.001)

    def resume(self) -> None:
        """``SIGCONT`` a paused process."""
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """``SIGKILL`` the process and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
                self.process.kill()
        self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()

    def stop(self) -> None:
        """Stop the process (``SIGTERM``, then ``SIGKILL`` after 5 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
                self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()

    def restart(self) -> None:
        """Kill the process and start a new, empty one on the same port."""
        self.kill()
        self.start()

    def __enter__(self) -> MemcachedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        running = self.process is not None and self.process.poll() is None
        state = f"pid {self.process.pid}" if running and self.process else "stopped"
        return f"<MemcachedServer {self.address} {state}>"


TWEMPROXY_HINT = (
    "twemproxy's nutcracker binary was not found on PATH or in /usr/sbin; "
    "install it from the system packages (Debian/Ubuntu: 'apt-get install "
    "nutcracker') or run './run.sh test', which installs it"
)


class Twemproxy:
    """One twemproxy (``nutcracker``) process on a free loopback port, in
    front of *servers*, owned by this object and dying with this process.

    The pool is consistent hashing as :class:`mcpool.Client` does it by
    default (ketama, MD5), with the text protocol (twemproxy speaks no
    binary) and, with *auto_eject*, failed servers ejected after
    *failure_limit* failures and retried after *retry_ms*.

    >>> with memcached_servers(3) as servers, Twemproxy(servers) as proxy:
    ...     mc = mcpool.Client.for_proxy(proxy.address)  # doctest: +SKIP

    :raises MemcachedNotInstalled: if ``nutcracker`` is missing.
    """

    def __init__(
        self,
        servers: Sequence[MemcachedServer],
        *,
        auto_eject: bool = True,
        failure_limit: int = 1,
        retry_ms: int = 1000,
        timeout_ms: int = 1000,
        host: str = "127.0.0.1",
    ) -> None:
        binary = shutil.which("nutcracker") or shutil.which(
            "nutcracker", path="/usr/sbin:/usr/local/sbin"
        )
        if binary is None:
            raise MemcachedNotInstalled(TWEMPROXY_HINT)
        self.binary = binary
        self.servers = list(servers)
        self.auto_eject = auto_eject
        self.failure_limit = failure_limit
        self.retry_ms = retry_ms
        self.timeout_ms = timeout_ms
        self.host = host
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._directory: tempfile.TemporaryDirectory[str] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the proxy, as pylibmc takes it."""
        return f"{self.host}:{self.port}"

    def config(self) -> str:
        """The YAML configuration the proxy runs with."""
        servers = "".join(f"    - {server.address}:1\n" for server in self.servers)
        return (
            "mcpool:\n"
            f"  listen: {self.address}\n"
            "  hash: md5\n"
            "  distribution: ketama\n"
            f"  timeout: {self.timeout_ms}\n"
            f"  auto_eject_hosts: {'true' if self.auto_eject else 'false'}\n"
            f"  server_retry_timeout: {self.retry_ms}\n"
            f"  server_failure_limit: {self.failure_limit}\n"
            "  servers:\n" + servers
        )

    def start(self, timeout: float = 10.0) -> Twemproxy:
        """Start the proxy and wait until it answers."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"nutcracker already running as pid {self.process.pid}")
        self._directory = tempfile.TemporaryDirectory(prefix="mcpool-twemproxy-")
        for _ in range(5):
            self.port = free_port(self.host)
            path = os.path.join(self._directory.name, "nutcracker.yml")
            with open(path, "w") as file:
                file.write(self.config())
            # -s 0 would still bind a stats port: give it a free one too.
            self.process = _spawner.popen(
                [
                    self.binary,
                    "-c",
                    path,
                    "-s",
                    str(free_port(self.host)),
                    "-a",
                    self.host,
                    "-v",
                    "0",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                with contextlib.suppress(OSError):
                    # A get through the proxy: answered once it listens.
                    if _ask(self.host, self.port, b"get mcpool:ready\r\n"):
                        return self
                time.sleep(0.01)
            self.stop()
        raise RuntimeError(f"nutcracker on {self.address} did not come up")

    def stop(self) -> None:
        """Stop the proxy (``SIGTERM``, then ``SIGKILL`` after 5 s)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    def __enter__(self) -> Twemproxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def memcached_servers(
    count: int,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[list[MemcachedServer]]:
    """Start *count* servers and stop them all at the end.

    >>> with memcached_servers(3) as servers:  # doctest: +SKIP
    ...     mc = pylibmc.Client([s.address for s in servers])
    """
    servers: list[MemcachedServer] = []
    try:
        for _ in range(count):
            servers.append(MemcachedServer(extra_args=extra_args, env=env).start())
        yield servers
    finally:
        for server in servers:
            server.stop()
