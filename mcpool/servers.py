"""Server addresses, and what a client knows about whether each one answers.

.. code-block:: python

    import mcpool

    mc = mcpool.Client(["10.0.0.1:11211", "10.0.0.2:11211"])
    for server in mc.health.snapshot():
        print(server.address, server.available, server.unavailable)

    mcpool.servers.parse_server("localhost:abc")
    # ValueError: memcached server 'localhost:abc': the port 'abc' is not a
    # number; write "host", "host:port", "[ipv6]:port" or "/path/to/socket"

libmemcached's errors do not say which server failed, so a
:class:`ServerHealth` finds out by asking: the first request that meets an
unavailable server starts a probe thread, which connects to every server and
sends one ``version`` request (``get`` on the text protocol, which proxies
such as twemproxy also answer). A server that does not answer within the
probe timeout is *unavailable*: mcpool logs one warning, counts the failed
requests against it, and asks it again every *recheck* seconds until it
answers, then logs that it is back and the thread ends. No thread runs while
every server answers.

While **every** server of a client is unavailable, its requests fail fast:
reads miss and writes raise :class:`~mcpool.ServerUnavailable` at once,
instead of each waiting a connect timeout (a paused server costs the full
timeout per request, again after every ``retry_timeout``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pylibmc

from .fork import reset_lock

__all__ = [
    "SERVER_STATS",
    "Server",
    "ServerHealth",
    "ServerState",
    "ask_each_server",
    "parse_server",
    "probe",
    "server_stat_lines",
]

log = logging.getLogger("mcpool.servers")

DEFAULT_PORT = 11211

_FORMS = 'write "host", "host:port", "[ipv6]:port" or "/path/to/socket"'


@dataclass(frozen=True)
class Server:
    """A parsed server address, as libmemcached reads it.

    >>> parse_server("10.0.0.1:11212:2")
    Server(spec='10.0.0.1:11212:2', host='10.0.0.1', port=11212, path=None, weight=2)
    """

    #: the address as given
    spec: str
    #: the host name or IP address (``None`` for a UNIX socket)
    host: str | None
    #: the TCP or UDP port (``None`` for a UNIX socket)
    port: int | None
    #: the socket path of a UNIX socket
    path: str | None = None
    #: the weight given after the port, for weighted ketama
    weight: int = 1
    #: ``True`` for a ``udp:`` address, which cannot be probed
    udp: bool = False

    @property
    def address(self) -> str:
        """``host:port``, ``[ipv6]:port`` or the socket path."""
        if self.path is not None:
            return self.path
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def _number(spec: str, what: str, text: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(
            f"memcached server {spec!r}: the {what} {text!r} is not a number "
            f"from {low} to {high}; {_FORMS}"
        )
    return int(text)


def parse_server(spec: str) -> Server:
    """Read one server address as pylibmc and libmemcached do.

    Forms: ``"host"`` (port 11211), ``"host:port"``, ``"host:port:weight"``,
    ``"[ipv6]"``, ``"[ipv6]:port[:weight]"``, ``"/path/to/socket"`` and a
    ``"udp:"`` or ``"tcp:"`` prefix before a host.

    :raises ValueError: naming the address and what is wrong with it, where
        pylibmc would say ``invalid literal for int()``.
    :raises TypeError: if *spec* is not a ``str``.

    >>> parse_server("[::1]:11212").address
    '[::1]:11212'
    >>> parse_server("cache").port
    11211
    """
    if not isinstance(spec, str):
        raise TypeError(
            f"memcached server {spec!r}: expected a str such as "
            f"'127.0.0.1:11211', got {type(spec).__name__}"
        )
    rest = spec.strip()
    if rest != spec or not rest:
        raise ValueError(
            f"memcached server {spec!r}: empty or padded with spaces; {_FORMS}"
        )
    if rest.startswith("/"):
        return Server(spec, None, None, path=rest)
    udp = False
    for scheme in ("tcp:", "udp:"):
        if rest.startswith(scheme):
            udp, rest = scheme == "udp:", rest[len(scheme) :]
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not host or (tail and not tail.startswith(":")):
            raise ValueError(
                f"memcached server {spec!r}: an IPv6 address needs its closing "
                f"bracket and then only ':port'; {_FORMS}"
            )
        fields = tail[1:].split(":") if tail else []
    else:
        host, *fields = rest.split(":")
    if len(fields) > 2:
        raise ValueError(
            f"memcached server {spec!r}: too many ':' (an IPv6 address goes in "
            f"brackets); {_FORMS}"
        )
    if not host:
        hint = " (an IPv6 address goes in brackets)" if rest.count(":") > 1 else ""
        raise ValueError(f"memcached server {spec!r}: no host{hint}; {_FORMS}")
    if any(ch.isspace() for ch in host):
        raise ValueError(f"memcached server {spec!r}: a space in the host; {_FORMS}")
    port = _number(spec, "port", fields[0], 1, 65535) if fields else DEFAULT_PORT
    weight = _number(spec, "weight", fields[1], 1, 2**31 - 1) if len(fields) > 1 else 1
    return Server(spec, host, port, weight=weight, udp=udp)


# A request every memcached answers, authenticated or not: the binary
# protocol's VERSION (memcached answers it before a SASL login), and on the
# text protocol a get of a key that is never set, which proxies that do not
# know "version" (twemproxy) pass on and answer too.
_BINARY_VERSION = bytes([0x80, 0x0B]) + bytes(22)
_TEXT_GET = b"get mcpool:probe\r\n"


def probe(server: Server | str, timeout: float, *, binary: bool = False) -> str | None:
    """Ask *server* for an answer; ``None`` if it gave one, else the reason.

    Any reply counts, an error too: the server is there. A UDP server cannot
    be asked this way and counts as answering.

    >>> probe("127.0.0.1:9", 1.0)  # doctest: +SKIP
    'connection refused'
    """
    if isinstance(server, str):
        server = parse_server(server)
    if server.udp:
        return None
    try:
        if server.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
        else:
            # Every address of the name, in turn, as libmemcached tries them.
            sock = socket.create_connection(
                (server.host, server.port or DEFAULT_PORT), timeout
            )
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no connection within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)
    with sock:
        try:
            if server.path is not None:
                sock.connect(server.path)
            sock.sendall(_BINARY_VERSION if binary else _TEXT_GET)
            if not sock.recv(1):
                return "the connection was closed without an answer"
        except ConnectionRefusedError:
            return "connection refused"
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


@dataclass(frozen=True)
class ServerState:
    """What a client knows about one server, as :meth:`ServerHealth.snapshot`
    and :attr:`PoolStats.servers <mcpool.PoolStats.servers>` show it."""

    #: ``host:port`` or the socket path
    address: str
    #: whether the server answered the last time it was asked
    available: bool
    #: requests that failed because the server did not answer: each
    #: one-key request that failed or missed only after the read timeout,
    #: and each request of several keys while the server was found
    #: unavailable
    unavailable: int
    #: times the server went from available to unavailable
    ejections: int
    #: when it last changed state, in seconds since the epoch
    since: float
    #: why the last probe failed, ``""`` while available
    error: str = ""


class _Record:
    __slots__ = ("available", "unavailable", "ejections", "since", "error")

    def __init__(self, now: float) -> None:
        self.available = True
        self.unavailable = 0
        self.ejections = 0
        self.since = now
        self.error = ""


class ServerHealth:
    """The state of a client's servers, shared by the client and its clones.

    :class:`~mcpool.Client` makes one and calls :meth:`failed` whenever a
    request meets an unavailable server; :attr:`all_down` is what makes its
    requests fail fast.

    :param servers: the client's server addresses.
    :param timeout: seconds a probe waits to connect and for the answer.
    :param recheck: seconds between probes of an unavailable server.
    :param binary: probe with the binary protocol (the client's protocol:
        a SASL server answers nothing else).

    >>> health = ServerHealth(["127.0.0.1:11211"], timeout=1.0)
    >>> health.all_down
    False
    >>> [s.available for s in health.snapshot()]
    [True]

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        servers: Iterable[Server | str],
        *,
        timeout: float,
        recheck: float = 1.0,
        binary: bool = False,
    ) -> None:
        self.servers: tuple[Server, ...] = tuple(
            s if isinstance(s, Server) else parse_server(s) for s in servers
        )
        self.timeout = timeout
        self.recheck = recheck
        self.binary = binary
        #: ``True`` while no server answers; read on every request
        self.all_down = False
        self._reset()

    def _reset(self) -> None:
        now = time.time()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._records = [_Record(now) for _ in self.servers]
        # Failed requests not yet put against a server: a probe decides.
        self._pending = 0
        self._unattributed = 0
        self._prober: threading.Thread | None = None
        self.all_down = False

    def _in_this_process(self) -> None:
        # A forked child has its parent's records but not its probe thread,
        # and maybe a lock that thread held: it starts afresh.
        if self._pid != os.getpid():
            with reset_lock():
                if self._pid != os.getpid():
                    self._reset()

    def failed(self, index: int | None = None) -> None:
        """Count a request that met an unavailable server, and probe.

        :param index: the position of the server in the client's list, when
            the request had one key (libmemcached's ``hash``); otherwise the
            request is counted against the servers the probe finds down.
        """
        self._in_this_process()
        with self._lock:
            if index is not None and 0 <= index < len(self._records):
                self._records[index].unavailable += 1
                self._start_probing()
                return
            down = [r for r in self._records if not r.available]
            for record in down:
                record.unavailable += 1
            if not down:
                self._pending += 1
            self._start_probing()

    def fail_fast(self) -> bool:
        """Whether a request should fail now without trying: ``True`` while
        every server is unavailable. Called only when :attr:`all_down` is set."""
        self._in_this_process()
        with self._lock:
            if self.all_down:
                for record in self._records:
                    record.unavailable += 1
                self._start_probing()
            return self.all_down

    def snapshot(self) -> tuple[ServerState, ...]:
        """Each server's state and counters, in the client's order."""
        self._in_this_process()
        with self._lock:
            return tuple(
                ServerState(
                    server.address,
                    record.available,
                    record.unavailable,
                    record.ejections,
                    record.since,
                    record.error,
                )
                for server, record in zip(self.servers, self._records, strict=True)
            )

    @property
    def unattributed(self) -> int:
        """Failed requests after which every server answered its probe: a
        server slower than the client's timeout for a moment, not down."""
        return self._unattributed

    def _start_probing(self) -> None:
        # Under self._lock.
        if self._prober is not None and self._prober.is_alive():
            return
        self._prober = threading.Thread(
            target=_probe_until_all_answer,
            args=(weakref.ref(self),),
            name="mcpool-server-probe",
            daemon=True,
        )
        self._prober.start()

    def _probe_round(self) -> bool:
        """Probe the servers; ``True`` while another round is needed."""
        # Every server each round, not only the ones known down: another may
        # fail meanwhile. No lock is held while probing, so a request that
        # fails during a round only counts itself.
        answers = [
            probe(server, self.timeout, binary=self.binary) for server in self.servers
        ]
        now = time.time()
        with self._lock:
            for server, record, error in zip(
                self.servers, self._records, answers, strict=True
            ):
                if error is None and not record.available:
                    log.info(
                        "memcached server %s answers again after %.1f s down "
                        "(%d requests failed meanwhile)",
                        server.address,
                        now - record.since,
                        record.unavailable,
                    )
                    record.available, record.since, record.error = True, now, ""
                elif error is not None and record.available:
                    log.warning(
                        "memcached server %s is unavailable: %s. Reads of its keys "
                        "miss and writes raise ServerUnavailable until it answers; "
                        "asking again every %g s.",
                        server.address,
                        error,
                        self.recheck,
                    )
                    record.available, record.since = False, now
                    record.ejections += 1
                if error is not None:
                    record.error = error
            down = [r for r in self._records if not r.available]
            for record in down:
                record.unavailable += self._pending
            if not down:
                self._unattributed += self._pending
            self._pending = 0
            self.all_down = len(down) == len(self._records)
            if not down:
                self._prober = None
            return bool(down)


def _probe_until_all_answer(health_ref: weakref.ref[ServerHealth]) -> None:
    # A weak reference, so that a client thrown away while its servers are
    # down does not keep this thread probing forever.
    while True:
        health = health_ref()
        if health is None or not health._probe_round():
            return
        recheck = health.recheck
        del health
        time.sleep(recheck)


def parse_servers(specs: Iterable[str]) -> tuple[Server, ...]:
    """:func:`parse_server` for each address; an empty list is an error."""
    if isinstance(specs, str):
        raise TypeError(
            f"servers={specs!r}: expected a list of addresses such as "
            f"[{specs!r}], not one str"
        )
    servers = tuple(parse_server(spec) for spec in specs)
    if not servers:
        raise ValueError("no memcached servers given: pass at least one address")
    return servers


#: The memcached statistics that ``flask mcpool stats`` and ``manage.py
#: mcpool stats`` show without ``--all``.
SERVER_STATS = (
    "version",
    "uptime",
    "curr_connections",
    "total_connections",
    "curr_items",
    "bytes",
    "limit_maxbytes",
    "get_hits",
    "get_misses",
    "evictions",
)


def ask_each_server(
    servers: Iterable[str], make_client: Callable[[list[str]], Any]
) -> list[tuple[str, float, dict[str, str] | Exception]]:
    """``(server, seconds, its statistics or the error)`` for each server.

    One client per server, made by *make_client* from a one-address list and
    never pooled, so that a dead server does not hide the others and no
    pooled client is held. The statistics are text.

    >>> ask_each_server(["127.0.0.1:11211"], mcpool.Client)  # doctest: +SKIP
    [('127.0.0.1:11211', 0.0004, {'pid': '4242', 'uptime': '73', ...})]
    """
    answers: list[tuple[str, float, dict[str, str] | Exception]] = []
    for server in servers:
        client = make_client([server])
        started = time.perf_counter()
        answer: dict[str, str] | Exception
        try:
            replies = client.get_stats()
            answer = {
                _text(k): _text(v)
                for k, v in (replies[0][1] if replies else {}).items()
            }
        except pylibmc.Error as exc:
            answer = exc
        finally:
            elapsed = time.perf_counter() - started
            client.disconnect_all()
        answers.append((server, elapsed, answer))
    return answers


def server_stat_lines(stats: Mapping[str, str], show_all: bool) -> list[str]:
    """``"  name: value"`` lines for *stats*: :data:`SERVER_STATS`, or every
    statistic with *show_all*."""
    names = sorted(stats) if show_all else [n for n in SERVER_STATS if n in stats]
    return [f"  {name}: {stats[name]}" for name in names]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
