"""A pylibmc client that is safe with any key and keeps answering when a server fails.

.. code-block:: python

    import mcpool

    mc = mcpool.Client(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    mc.set("user:42", profile)          # keys are checked before the wire
    mc.get("user 42")                   # raises mcpool.InvalidKey
    pool = mcpool.ClientPool(mc, 8)     # clones stay mcpool.Client

:class:`Client` is a :class:`pylibmc.Client` with three differences:

- every key is checked against :mod:`mcpool.keys` before a request is built
  (:class:`~mcpool.InvalidKey` otherwise), for every method that takes keys;
- production defaults (:data:`DEFAULT_BEHAVIORS`): consistent hashing,
  ejection and retry of failed servers, short timeouts, ``TCP_NODELAY`` and
  keepalive; each can be overridden with *behaviors*;
- one failure semantics, the same for every libmemcached build: a read whose
  server is unavailable (down, hung past the timeout, refusing, ejected) is
  a miss; a write raises :class:`~mcpool.ServerUnavailable`; a value over
  the server's item size limit raises :class:`~mcpool.ValueTooLarge` and
  leaves the key without a value.

See ``docs/key-safety.rst`` and ``docs/failover.rst`` for the reasons and the
measured effect of each default.

.. versionadded:: 0.1
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pylibmc

from .errors import ServerUnavailable, ValueTooLarge
from .keys import MAX_KEY_LENGTH, wire_key, wire_keys, wire_prefix
from .servers import ServerHealth, parse_servers

__all__ = [
    "DEFAULT_BEHAVIORS",
    "DEFAULT_TIMEOUT",
    "PROXY_BEHAVIORS",
    "SASL_MIN_LIBMEMCACHED",
    "Client",
    "libmemcached_version",
    "timeout_behaviors",
]

#: Seconds a request may wait to connect, and then for each read or write on
#: the socket, before its server counts as unavailable. Measured on a loaded
#: two-core machine (benchmarks/bench_timeout.py): no healthy loopback server
#: tripped 0.25 s in 678,000 requests, 0.1 s tripped in 1 of 5 windows, and
#: 0.5 s costs up to twice the time lost to a hung server.
DEFAULT_TIMEOUT = 0.25

#: The behaviours a :class:`Client` starts with, on top of libmemcached's.
#: The timeouts come from *timeout* (:func:`timeout_behaviors`). Why each
#: value, and what it changes, measured: ``docs/failover.rst``.
DEFAULT_BEHAVIORS: Mapping[str, Any] = {
    # Consistent hashing (ketama, MD5 for keys and for the continuum): a lost
    # server moves only its own keys; with modula, half of the other
    # servers' keys move too. Not ketama_weighted: memcached_clone() drops
    # its flag, so clones would route keys unlike the client they came from.
    "ketama": True,
    "hash": "md5",
    "ketama_hash": "md5",
    # Eject a server after failure_limit failed connects, retry it after
    # retry_timeout seconds, put it back after dead_timeout. All four must be
    # set: libmemcached 1.0 folds failure_limit into remove_failed, 1.1 does
    # not, and without dead_timeout an ejected server is never skipped.
    "remove_failed": 1,
    "failure_limit": 2,
    "retry_timeout": 1,
    "dead_timeout": 3,
    # Small requests go out at once instead of waiting for an ACK (Nagle).
    "tcp_nodelay": True,
    # Let the kernel notice connections whose peer vanished.
    "tcp_keepalive": True,
}

#: The behaviours :meth:`Client.for_proxy` sets over :data:`DEFAULT_BEHAVIORS`,
#: for a client whose one server is a proxy (twemproxy) that spreads keys over
#: the real servers: no consistent hashing of its own (one server: modula and
#: the cheap default hash), the failover settings kept, so that a proxy that
#: is down costs one timeout and then fails fast until retry_timeout.
PROXY_BEHAVIORS: Mapping[str, Any] = {
    "ketama": False,
    "hash": "default",
}

_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = tuple(
    getattr(pylibmc, name)
    for name in (
        "ConnectionError",
        "ConnectionBindError",
        "HostLookupError",
        "NoServers",
        "ReadError",
        "ServerDead",
        "ServerDown",
        "UnixSocketError",
        "UnknownReadFailure",
        "WriteError",
    )
    if hasattr(pylibmc, name)
)

#: What libmemcached raises when the server closed the connection under a
#: request (it restarted, or was killed), as opposed to a server that does not
#: answer in time (a timeout) or that is already known to have failed
#: (``ServerDown``, ``ServerDead``). Measured after a memcached restart:
#: ``get`` raises ``ConnectionError`` (error 3) on libmemcached 1.0.16 and
#: 1.1.4; binary ``get_multi`` and ``gets`` raise ``SomeErrors`` (error 19).
_BROKEN_TYPES: tuple[type[BaseException], ...] = tuple(
    getattr(pylibmc, name)
    for name in (
        "ConnectionError",
        "ReadError",
        "WriteError",
        "UnknownReadFailure",
        "SomeErrors",
    )
    if hasattr(pylibmc, name)
)

#: The writes that ``retry_writes=True`` repeats once on a broken connection:
#: those that leave the same state when applied twice. incr, decr, append
#: and prepend are never repeated.
_SERVER_ERROR: type[BaseException] = getattr(pylibmc, "ServerError", pylibmc.Error)

_REPEATABLE_WRITES = frozenset({"set", "add", "replace", "cas", "delete", "touch"})

#: libmemcached return codes that pylibmc raises as a bare ``pylibmc.Error``
#: and that mean the server did not answer: MEMCACHED_ERRNO (26, a socket
#: error) and MEMCACHED_TIMEOUT (31).
_UNAVAILABLE_CODES = frozenset({26, 31})
_RETURN_CODE = re.compile(r"error (\d+) from")
_AUTH_PROBLEM, _AUTH_FAILURE = 40, 41

_MISS = object()

_monotonic = time.monotonic


def _poll_seconds(behaviors: Mapping[str, Any], default: float) -> float:
    """Seconds a read waits for its server's answer: ``_poll_timeout``.

    The one libmemcached timeout that bounds a read on every build measured
    (1.0.16, 1.0.18, 1.1.4): with it at 0.3 s and the others at 1.5 s, a
    read of a paused server took 0.30-0.32 s; with ``receive_timeout`` or
    ``connect_timeout`` at 0.3 s and the others at 1.5 s, 1.50 s. A read
    that times out waits at least this long, never less (``poll()`` rounds
    up), while a healthy loopback miss takes microseconds.
    """
    if "_poll_timeout" not in behaviors:
        return default
    return max(1, int(behaviors["_poll_timeout"])) / 1000


#: The least time a server probe waits for an answer, in seconds.
_MIN_PROBE_TIMEOUT = 1.0

#: The oldest libmemcached whose SASL login works every time. Before 1.1 it
#: reads the server's list of mechanisms into a stack buffer without ending
#: it with a NUL, so the byte that follows in memory joins the last name:
#: "PLAIN" becomes "PLAINV" (and the login fails) or "PLAIN\x7f" (and it
#: works), depending on what ran before. Both wheels carry such a build:
#: pylibmc 1.6.3's libmemcached 1.0.16, pylibmc2 1.6.4's 1.0.18.
SASL_MIN_LIBMEMCACHED = (1, 1)


def libmemcached_version() -> tuple[int, ...]:
    """The version of the libmemcached that pylibmc runs, as numbers.

    >>> libmemcached_version() >= (1, 0)
    True
    """
    return tuple(int(part) for part in re.findall(r"\d+", pylibmc.libmemcached_version))


def _refuse_unreliable_sasl() -> None:
    version = libmemcached_version()
    if version >= SASL_MIN_LIBMEMCACHED:
        return
    raise RuntimeError(
        f"SASL login does not work reliably with this pylibmc: it runs "
        f"libmemcached {pylibmc.libmemcached_version}, which reads the server's "
        "list of SASL mechanisms without ending it, so a stray byte joins the "
        "mechanism's name and logins fail at random with 'FAILED TO SEND "
        "AUTHENTICATION TO SERVER, no mechanism available'. libmemcached 1.1 and "
        "later are not affected. The wheels of pylibmc (libmemcached 1.0.16) and "
        "pylibmc2 (1.0.18) both have this fault: build pylibmc against the "
        "system's libmemcached 1.1 instead (Debian/Ubuntu: apt-get install "
        "libmemcached-dev, then pip install --no-binary pylibmc pylibmc)."
    )


def timeout_behaviors(timeout: float) -> dict[str, int]:
    """The libmemcached behaviours that make *timeout* seconds the limit.

    libmemcached has four timeouts in two units, and builds differ in which
    they honour: 1.0 waits with ``poll()`` (``_poll_timeout``) after a
    non-blocking connect (``connect_timeout``); other builds use the socket
    options (``send_timeout``, ``receive_timeout``, in microseconds). All
    four get the same value, so the bound is the same whichever build runs.

    >>> timeout_behaviors(0.25)
    {'connect_timeout': 250, '_poll_timeout': 250, 'send_timeout': 250000, \
'receive_timeout': 250000}
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout}")
    milliseconds = max(1, round(timeout * 1000))
    return {
        "connect_timeout": milliseconds,
        "_poll_timeout": milliseconds,
        "send_timeout": milliseconds * 1000,
        "receive_timeout": milliseconds * 1000,
    }


def is_unavailable(exc: BaseException) -> bool:
    """Whether a pylibmc error means the key's server did not answer.

    >>> is_unavailable(pylibmc.ServerDown("down"))
    True
    >>> is_unavailable(pylibmc.NotFound("gone"))
    False
    """
    if isinstance(exc, _UNAVAILABLE_TYPES):
        return True
    if type(exc) is pylibmc.Error:
        match = _RETURN_CODE.search(str(exc))
        return match is not None and int(match.group(1)) in _UNAVAILABLE_CODES
    return False


def connection_broke(exc: BaseException) -> bool:
    """Whether a pylibmc error means the connection broke under the request.

    Such a request may succeed at once on a new connection (the server
    restarted); a timeout, or a server already marked as failed, would not.

    >>> connection_broke(pylibmc.ConnectionError("reset"))
    True
    >>> connection_broke(pylibmc.ServerDown("disabled until timed retry"))
    False
    """
    return isinstance(exc, _BROKEN_TYPES)


def _with_checked_namespace(
    behaviors: Mapping[str, Any], length: int
) -> tuple[dict[str, Any], int]:
    """*behaviors* with its ``namespace`` checked and made plain ``bytes``,
    and the namespace's length (*length* when there is none)."""
    behaviors = dict(behaviors)
    if "namespace" not in behaviors:
        return behaviors, length
    if behaviors["namespace"] is None:
        return behaviors, 0
    namespace = wire_prefix(behaviors["namespace"], "namespace")
    # pylibmc reads the namespace's value as bytes without checking its type:
    # a str would send the bytes of the Python object header.
    if type(namespace) is str:
        namespace = namespace.encode("ascii")
    behaviors["namespace"] = namespace
    return behaviors, len(namespace)


def _explain_authentication(exc: BaseException) -> None:
    """Re-raise a SASL failure with what to check; return for anything else."""
    match = _RETURN_CODE.search(str(exc))
    code = int(match.group(1)) if match else None
    if code == _AUTH_PROBLEM:
        # With libmemcached 1.1 (older builds are refused up front), this is
        # what a missing client plugin gives: libsasl2 loads its mechanisms
        # from plugin files, and found none that the server offers.
        raise pylibmc.Error(
            f"{exc}. The SASL client could not start: libsasl2 has no plugin for "
            "a mechanism the server offers (memcached offers PLAIN). Install the "
            "client plugins (Debian/Ubuntu: libsasl2-modules); if libsasl2 looks "
            "for them in another directory, set SASL_PATH to theirs (Debian: "
            "/usr/lib/x86_64-linux-gnu/sasl2) before pylibmc is imported."
        ) from exc
    if code == _AUTH_FAILURE:
        raise pylibmc.Error(
            f"{exc}. The server refused the SASL username or password. Until "
            "retry_timeout passes it then counts as failed: reads miss and "
            "writes raise ServerUnavailable."
        ) from exc


def _as_bytes(key: str | bytes) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


class Client(pylibmc.Client):
    """A :class:`pylibmc.Client` with key validation and failover defaults.

    :param servers: ``"host:port"`` strings, as for pylibmc (``"[::1]:11211"``,
        ``"/path/to/socket"``, ``"host:port:weight"``).
    :param behaviors: libmemcached behaviours applied over
        :data:`DEFAULT_BEHAVIORS` and over the ones *timeout* sets; a
        ``namespace`` counts toward the 250-byte key limit.
    :param binary: use the binary protocol. Defaults to ``True`` when a
        *username* is given (SASL needs it), ``False`` otherwise.
    :param username: SASL user name; needs *password*.
    :param password: SASL password.
    :param timeout: seconds to connect and then per socket read or write;
        past it the server is unavailable (:func:`timeout_behaviors`).
    :param retry_writes: repeat ``set``, ``add``, ``replace``, ``cas``,
        ``delete`` and ``touch`` once on a new connection when the
        connection broke under them, as reads always are. Off by default: a
        write whose connection broke after the server received it may then
        be applied twice (an ``add`` then answers ``False``). ``incr``,
        ``decr``, ``append`` and ``prepend`` are never repeated.
    :raises mcpool.InvalidKey: if the ``namespace`` behaviour is not a valid
        key prefix.
    :raises ValueError: for SASL credentials with ``binary=False``, or half
        of them.
    :raises RuntimeError: for SASL credentials when pylibmc runs a
        libmemcached older than 1.1 (the pylibmc and pylibmc2 wheels), whose
        logins fail at random; the message says which build to use.

    Reads whose server is unavailable return a miss; writes raise
    :class:`~mcpool.ServerUnavailable`. A read whose connection broke (the
    server restarted) is tried once more on a new connection before it
    misses (:doc:`/overload`). A value over the item size limit
    raises :class:`~mcpool.ValueTooLarge`, and the key holds no value after.

    >>> mc = Client(["127.0.0.1:11211"], behaviors={"dead_timeout": 10})
    >>> mc.set("greeting", "hello")
    True
    >>> mc.clone().__class__ is Client
    True
    """

    _retry_writes = False
    _proxy = False
    #: seconds after which a miss means the key's server did not answer
    _read_timeout = DEFAULT_TIMEOUT

    def __init__(
        self,
        servers: Iterable[str],
        behaviors: Mapping[str, Any] | None = None,
        binary: bool | None = None,
        username: str | None = None,
        password: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry_writes: bool = False,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("SASL needs both a username and a password")
        if binary is None:
            binary = username is not None
        elif username is not None and not binary:
            raise ValueError(
                "SASL authentication needs the binary protocol: drop binary=False"
            )
        if username is not None:
            _refuse_unreliable_sasl()
        self._retry_writes = bool(retry_writes)
        merged: dict[str, Any] = dict(DEFAULT_BEHAVIORS)
        merged.update(timeout_behaviors(timeout))
        merged.update(behaviors or {})
        merged, self._namespace_length = _with_checked_namespace(merged, 0)
        self._read_timeout = _poll_seconds(merged, timeout)
        parsed = parse_servers(servers)
        #: whether each server answers, with counters; shared with clones
        #: (:class:`mcpool.servers.ServerHealth`)
        self.health = ServerHealth(
            parsed,
            # A probe that gives up as soon as a request would calls a
            # healthy server that was slow for a moment down, and failing
            # fast then turns its hits into misses for a second.
            timeout=max(timeout, _MIN_PROBE_TIMEOUT),
            recheck=max(float(merged.get("retry_timeout", 1)), 1.0),
            binary=bool(binary),
        )
        # Always a dict, never None: pylibmc 1.6.3 built for Python 3.13
        # prints 31 "Exception ignored in PyMapping_HasKeyString()"
        # tracebacks for a client made without behaviours.
        super().__init__(
            [server.spec for server in parsed],
            behaviors=merged,
            binary=bool(binary),
            username=username,
            password=password,
        )

    @classmethod
    def for_proxy(
        cls,
        address: str,
        behaviors: Mapping[str, Any] | None = None,
        *,
        timeout: float = 1.0,
        retry_writes: bool = False,
    ) -> Client:
        """A client for one memcached proxy (twemproxy) at *address*.

        The text protocol (twemproxy does not speak the binary one, so no
        SASL either), :data:`PROXY_BEHAVIORS` over the defaults, and a
        *timeout* longer than the proxy's own server timeout, so that the
        proxy reports a failed server before the client gives up on the
        proxy. See :doc:`/scale-out`.

        >>> mc = Client.for_proxy("127.0.0.1:22121")  # doctest: +SKIP
        >>> pool = ClientPool(mc, 8)  # doctest: +SKIP

        .. versionadded:: 0.1
        """
        merged = dict(PROXY_BEHAVIORS)
        merged.update(behaviors or {})
        client = cls(
            [address],
            behaviors=merged,
            binary=False,
            timeout=timeout,
            retry_writes=retry_writes,
        )
        client._proxy = True
        return client

    def clone(self) -> Client:
        """A new client with the same servers, behaviours and credentials.

        pylibmc's C ``clone`` makes an object of this class without calling
        ``__init__``; the Python attributes are copied here so the clone
        checks keys exactly as this client does.
        """
        clone: Client = super().clone()
        clone.__dict__.update(self.__dict__)
        return clone

    def set_behaviors(self, behaviors: Mapping[str, Any]) -> Any:
        """Set behaviours, as :meth:`pylibmc.Client.set_behaviors`.

        A new ``namespace`` is checked like a key prefix first.
        """
        checked, namespace_length = _with_checked_namespace(
            behaviors, self._namespace_length
        )
        result = super().set_behaviors(checked)
        self._namespace_length = namespace_length
        self._read_timeout = _poll_seconds(checked, self._read_timeout)
        return result

    # Reads: an unavailable server is a miss.

    def get(self, key: str | bytes, default: Any = None) -> Any:
        """The value of *key*, or *default* when it is missing or its server
        is unavailable.

        :raises mcpool.InvalidKey: if *key* breaks the key rules.
        """
        # The common case inline (a plain str key, valid): a function call
        # here would be a third of what the checks cost. type(), not
        # key.__class__, which a subclass can fake.
        if not (
            type(key) is str
            and 0 < len(key) <= self._key_limit
            and key.isascii()
            and key.isprintable()
            and " " not in key
        ):
            key = wire_key(key, self._namespace_length)
        # _nothing_answers() inline: the hot path.
        if self.health.all_down and self.health.fail_fast():
            return default
        started = _monotonic()
        try:
            value = _get(self, key, _MISS)
        except pylibmc.Error as exc:
            if not connection_broke(exc):
                if self._met_unavailable(exc, key):
                    return default
                _explain_authentication(exc)
                raise
        else:
            if value is not _MISS:
                return value
            if _monotonic() - started >= self._read_timeout:
                self._count_unavailable(key)
            return default
        try:
            return self._on_new_connection(_get, key, default)
        except pylibmc.Error as exc:
            if self._met_unavailable(exc, key) or connection_broke(exc):
                return default
            _explain_authentication(exc)
            raise

    def gets(self, key: str | bytes) -> tuple[Any, Any]:
        """``(value, cas_id)``, or ``(None, None)`` when missing or unavailable.

        Needs the ``cas`` behaviour, as with pylibmc.
        """
        key = wire_key(key, self._namespace_length)
        if self._nothing_answers():
            return None, None
        # pylibmc's gets (1.6.3, pylibmc2 1.6.4) drops its reference to the
        # encoded key before sending it with the GIL released: for a str key
        # that frees the bytes, another thread can reuse the memory, and the
        # reply is another key's value. Bytes that this frame holds stay put.
        if type(key) is str:
            key = key.encode("utf-8")
        started = _monotonic()
        try:
            found: tuple[Any, Any] = _gets(self, key)
        except pylibmc.Error as exc:
            if not connection_broke(exc):
                if self._met_unavailable(exc, key):
                    return None, None
                _explain_authentication(exc)
                raise
        else:
            # A hit always has a cas id; a miss is (None, None).
            if found[1] is None and _monotonic() - started >= self._read_timeout:
                self._count_unavailable(key)
            return found
        try:
            return self._on_new_connection(_gets, key)  # type: ignore[no-any-return]
        except pylibmc.Error as exc:
            if self._met_unavailable(exc, key) or connection_broke(exc):
                return None, None
            _explain_authentication(exc)
            raise

    def get_multi(
        self, keys: Iterable[str | bytes], key_prefix: str | bytes | None = None
    ) -> dict[Any, Any]:
        """A dict of the keys found, as :meth:`pylibmc.Client.get_multi`.

        Every key is checked, with *key_prefix*, before anything is sent.
        When a server is unavailable the call does not fail: the keys are
        fetched one by one, and those of the unavailable server are missing
        from the result.
        """
        prefix, prefix_length = self._checked_prefix(key_prefix)
        keys = wire_keys(keys, prefix_length)
        if self._nothing_answers():
            return {}
        options = {"key_prefix": prefix} if prefix else {}
        started = _monotonic()
        try:
            found: dict[Any, Any] = _get_multi(self, keys, **options)
        except pylibmc.Error as exc:
            if not connection_broke(exc):
                if not self._met_unavailable(exc):
                    _explain_authentication(exc)
                    raise
            else:
                try:
                    return self._on_new_connection(_get_multi, keys, **options)  # type: ignore[no-any-return]
                except pylibmc.Error as again:
                    if not (self._met_unavailable(again) or connection_broke(again)):
                        _explain_authentication(again)
                        raise
        else:
            if len(found) < len(keys) and _monotonic() - started >= self._read_timeout:
                self._missed_slowly(keys, found, prefix)
            return found
        # One mget spans every server and fails as a whole; single gets let
        # the healthy servers answer. A server that just failed fails fast
        # now (it is in its retry_timeout), so this costs little extra.
        raw_prefix = _as_bytes(prefix)
        found = {}
        for key in keys:
            value = self.get(raw_prefix + _as_bytes(key), _MISS)
            if value is not _MISS:
                found[key] = value
        return found

    # Writes: an unavailable server raises ServerUnavailable.

    def set(
        self,
        key: str | bytes,
        val: Any,
        time: int = 0,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> bool:
        """Store *val* under *key*, as :meth:`pylibmc.Client.set`.

        :raises mcpool.InvalidKey: if *key* breaks the key rules.
        :raises mcpool.ValueTooLarge: if the server refuses the value for
            its size; *key* then holds no value.
        :raises mcpool.ServerUnavailable: if the key's server is unavailable.
        """
        key = wire_key(key, self._namespace_length)
        return self._store(
            _Base.set, "set", key, val, time, min_compress_len, compress_level
        )

    def add(
        self,
        key: str | bytes,
        val: Any,
        time: int = 0,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> bool:
        """Store *val* unless *key* exists; as :meth:`set` otherwise."""
        key = wire_key(key, self._namespace_length)
        return self._store(
            _Base.add, "add", key, val, time, min_compress_len, compress_level
        )

    def replace(
        self,
        key: str | bytes,
        val: Any,
        time: int = 0,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> bool:
        """Store *val* only if *key* exists; as :meth:`set` otherwise."""
        key = wire_key(key, self._namespace_length)
        return self._store(
            _Base.replace, "replace", key, val, time, min_compress_len, compress_level
        )

    def append(
        self,
        key: str | bytes,
        val: Any,
        time: int = 0,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> bool:
        """Append *val* to the value of *key*; as :meth:`set` otherwise."""
        key = wire_key(key, self._namespace_length)
        return self._store(
            _Base.append, "append", key, val, time, min_compress_len, compress_level
        )

    def prepend(
        self,
        key: str | bytes,
        val: Any,
        time: int = 0,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> bool:
        """Prepend *val* to the value of *key*; as :meth:`set` otherwise."""
        key = wire_key(key, self._namespace_length)
        return self._store(
            _Base.prepend, "prepend", key, val, time, min_compress_len, compress_level
        )

    def cas(self, key: str | bytes, val: Any, cas: int, time: int = 0) -> bool:
        """Store *val* if *key* still has *cas* (from :meth:`gets`); as :meth:`set`."""
        key = wire_key(key, self._namespace_length)
        return self._store(_Base.cas, "cas", key, val, cas, time)

    def delete(self, key: str | bytes) -> bool:
        """Delete *key*; ``False`` if it was not there.

        :raises mcpool.ServerUnavailable: if the key's server is unavailable:
            the delete was not applied.
        """
        key = wire_key(key, self._namespace_length)
        return self._write(_Base.delete, "delete", key)  # type: ignore[no-any-return]

    def touch(self, key: str | bytes, time: int) -> bool:
        """Give *key* a new expiry time; ``False`` if it was not there."""
        key = wire_key(key, self._namespace_length)
        return self._write(_Base.touch, "touch", key, time)  # type: ignore[no-any-return]

    def incr(self, key: str | bytes, delta: int = 1) -> int:
        """Add *delta* to the counter at *key*; raises ``pylibmc.NotFound``
        if there is none, as pylibmc does."""
        key = wire_key(key, self._namespace_length)
        return self._write(_Base.incr, "incr", key, delta)  # type: ignore[no-any-return]

    def decr(self, key: str | bytes, delta: int = 1) -> int:
        """Subtract *delta* from the counter at *key* (not below 0)."""
        key = wire_key(key, self._namespace_length)
        return self._write(_Base.decr, "decr", key, delta)  # type: ignore[no-any-return]

    def set_multi(
        self,
        mapping: Mapping[Any, Any],
        time: int = 0,
        key_prefix: str | bytes | None = None,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> list[Any]:
        """Store every item of *mapping*; return the keys not stored.

        All keys are checked and all values serialised first: one invalid
        key, or one value that cannot be serialised (pickling fails, a str
        with a lone surrogate), and the call raises (:class:`~mcpool.InvalidKey`,
        or the serialiser's own error) with nothing sent or stored.
        Then each item is stored in order, and a value over the size limit
        does not stop the others: when all are done,
        :class:`~mcpool.ValueTooLarge` lists the oversize keys (which now
        hold no value) in ``keys`` and every key not stored in ``failed``.
        If a server is unavailable the call stops there and raises
        :class:`~mcpool.ServerUnavailable` whose ``keys`` are the keys not
        stored (that one and the ones after it): one timeout at most.
        """
        return self._store_multi(
            _Base.set,
            "set",
            mapping,
            time,
            key_prefix,
            min_compress_len,
            compress_level,
        )

    def add_multi(
        self,
        mapping: Mapping[Any, Any],
        time: int = 0,
        key_prefix: str | bytes | None = None,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> list[Any]:
        """Add every item of *mapping* whose key is absent; as :meth:`set_multi`."""
        return self._store_multi(
            _Base.add,
            "add",
            mapping,
            time,
            key_prefix,
            min_compress_len,
            compress_level,
        )

    def delete_multi(
        self, keys: Iterable[str | bytes], key_prefix: str | bytes | None = None
    ) -> bool:
        """Delete every key; ``True`` if all were there, as pylibmc.

        All keys are checked before anything is sent.

        :raises mcpool.ServerUnavailable: at the first key whose server is
            unavailable; ``keys`` are that one and the ones after it.
        """
        prefix, prefix_length = self._checked_prefix(key_prefix)
        keys = wire_keys(keys, prefix_length)
        if self._nothing_answers():
            raise self._unavailable(None, "delete_multi", keys)
        raw_prefix = _as_bytes(prefix)
        all_deleted = True
        for index, key in enumerate(keys):
            try:
                all_deleted &= bool(_Base.delete(self, raw_prefix + _as_bytes(key)))
            except pylibmc.Error as exc:
                if self._met_unavailable(exc, raw_prefix + _as_bytes(key)):
                    raise self._unavailable(exc, "delete_multi", keys[index:]) from exc
                _explain_authentication(exc)
                raise
        return all_deleted

    def incr_multi(
        self,
        keys: Iterable[str | bytes],
        key_prefix: str | bytes | None = None,
        delta: int = 1,
    ) -> None:
        """Add *delta* to each counter, as :meth:`pylibmc.Client.incr_multi`.

        All keys are checked before anything is sent.
        """
        prefix, prefix_length = self._checked_prefix(key_prefix)
        keys = wire_keys(keys, prefix_length)
        if self._nothing_answers():
            raise self._unavailable(None, "incr_multi", keys)
        try:
            if prefix:
                super().incr_multi(keys, key_prefix=prefix, delta=delta)
            else:
                super().incr_multi(keys, delta=delta)
        except pylibmc.Error as exc:
            if self._met_unavailable(exc):
                raise self._unavailable(exc, "incr_multi", keys) from exc
            _explain_authentication(exc)
            raise

    # The mapping interface (mc[key], mc[key] = v, del mc[key], key in mc)
    # is pylibmc's, which calls get/set/delete above.

    def _checked_prefix(self, key_prefix: Any) -> tuple[str | bytes, int]:
        """The plain *key_prefix* to send and the bytes in front of each key
        (prefix and namespace)."""
        if key_prefix is None:
            return "", self._namespace_length
        prefix = wire_prefix(key_prefix)
        return prefix, len(prefix) + self._namespace_length

    @property
    def _namespace_length(self) -> int:
        return MAX_KEY_LENGTH - self._key_limit

    @_namespace_length.setter
    def _namespace_length(self, length: int) -> None:
        self._key_limit = MAX_KEY_LENGTH - length

    def _on_new_connection(
        self, method: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        """Call *method* once more, on a new connection, after this client's
        connection broke under it.

        On a clone: a clone starts with no record of failed servers.
        libmemcached 1.0.16 marks the server failed for *retry_timeout* after
        a broken connection, so this client would fail the call at once
        (``ServerDown``, error 47), and a server that is really down keeps
        that mark, as ejection needs. Only when the server answered the
        clone does this client drop its connections, and with them the mark
        (``disconnect_all`` clears it, measured): its next call reconnects.
        """
        fresh = _Base.clone(self)
        try:
            result = method(fresh, *args, **kw)
        finally:
            fresh.disconnect_all()
        self.disconnect_all()
        return result

    def _write_again(
        self, method: Callable[..., Any], name: str, key: str | bytes, *args: Any
    ) -> Any:
        """A write whose connection broke, repeated once (``retry_writes``)."""
        try:
            return self._on_new_connection(method, key, *args)
        except pylibmc.Error as exc:
            if self._met_unavailable(exc, key) or connection_broke(exc):
                raise self._unavailable(exc, name, [key]) from exc
            _explain_authentication(exc)
            raise

    def _write(
        self, method: Callable[..., Any], name: str, key: str | bytes, *args: Any
    ) -> Any:
        if self._nothing_answers():
            raise self._unavailable(None, name, [key])
        try:
            return method(self, key, *args)
        except pylibmc.Error as exc:
            if (
                self._retry_writes
                and name in _REPEATABLE_WRITES
                and connection_broke(exc)
            ):
                return self._write_again(method, name, key, *args)
            if self._met_unavailable(exc, key):
                raise self._unavailable(exc, name, [key]) from exc
            _explain_authentication(exc)
            raise

    def _store(
        self, method: Callable[..., Any], name: str, key: str | bytes, *args: Any
    ) -> bool:
        if self._nothing_answers():
            raise self._unavailable(None, name, [key])
        try:
            return bool(method(self, key, *args))
        except pylibmc.TooBig as exc:
            self._forget(key)
            raise ValueTooLarge(
                f"{name}({key!r:.60}): the value is larger than the server's item "
                "size limit (1 MiB unless memcached runs with -I); it was not "
                "stored and the key now holds no value. Store less (split it, "
                "or pass min_compress_len to compress) or raise the server's -I.",
                [key],
            ) from exc
        except pylibmc.Error as exc:
            if (
                self._retry_writes
                and name in _REPEATABLE_WRITES
                and connection_broke(exc)
            ):
                return bool(self._write_again(method, name, key, *args))
            if self._met_unavailable(exc, key):
                raise self._unavailable(exc, name, [key]) from exc
            _explain_authentication(exc)
            raise

    def _store_multi(
        self,
        method: Callable[..., Any],
        name: str,
        mapping: Mapping[Any, Any],
        time: int,
        key_prefix: str | bytes | None,
        min_compress_len: int,
        compress_level: int,
    ) -> list[Any]:
        items = list(mapping.items())
        prefix, prefix_length = self._checked_prefix(key_prefix)
        keys = wire_keys([key for key, _ in items], prefix_length)
        # Every value is serialised once before anything is sent, so a value
        # that cannot be (unpicklable, a str with a lone surrogate) stops the
        # call with nothing stored, as in pylibmc; pylibmc serialises each
        # value again as it sends it. Plain bytes are sent as they are.
        serialize = self.serialize
        for _, value in items:
            if type(value) is not bytes:
                serialize(value)
        if self._nothing_answers():
            raise self._unavailable(None, f"{name}_multi", [key for key, _ in items])
        raw_prefix = _as_bytes(prefix)
        failed: list[Any] = []
        too_large: list[Any] = []
        # pylibmc's C loop also sends one request per key and waits for its
        # reply; doing it here costs about a microsecond per key and lets an
        # oversize value fail alone instead of stopping the keys after it.
        for index, (key, value) in enumerate(items):
            sent_key = raw_prefix + _as_bytes(keys[index])
            try:
                stored = method(
                    self, sent_key, value, time, min_compress_len, compress_level
                )
            except pylibmc.TooBig:
                self._forget(sent_key)
                too_large.append(key)
                failed.append(key)
                continue
            except pylibmc.Error as exc:
                if self._met_unavailable(exc, sent_key):
                    not_stored = failed + [k for k, _ in items[index:]]
                    raise self._unavailable(exc, f"{name}_multi", not_stored) from exc
                _explain_authentication(exc)
                raise
            if not stored:
                failed.append(key)
        if too_large:
            raise ValueTooLarge(
                f"{name}_multi: {len(too_large)} of {len(items)} values are larger "
                f"than the server's item size limit: {too_large!r:.200}. Those keys "
                "now hold no value; the other keys were stored "
                f"({len(failed) - len(too_large)} refused for other reasons, see "
                ".failed). Store less or raise the server's -I.",
                too_large,
                failed,
            )
        return failed

    def _forget(self, key: str | bytes) -> None:
        # memcached drops the old value when a *set* is too large, but keeps
        # it for replace/append/prepend/cas: delete it so that every write
        # that fails for size leaves the same state, and no stale value.
        with contextlib.suppress(pylibmc.Error):
            _Base.delete(self, key)

    def _nothing_answers(self) -> bool:
        """Whether to fail at once, sending nothing: no server answers."""
        return self.health.all_down and self.health.fail_fast()

    def _missed_slowly(
        self, keys: Sequence[str | bytes], found: Mapping[Any, Any], prefix: str | bytes
    ) -> None:
        """Count a multi-get that took the read timeout and left keys out.

        Against the missing keys' server when they have one (a hung server
        and nothing else missing), else for the probe to decide.
        """
        raw_prefix = _as_bytes(prefix)
        missing = [raw_prefix + _as_bytes(key) for key in keys if key not in found]
        if not missing:
            return
        try:
            one_server = len({int(self.hash(key)) for key in missing}) == 1
        except pylibmc.Error:
            one_server = False
        self._count_unavailable(missing[0] if one_server else None)

    def _count_unavailable(self, key: str | bytes | None) -> None:
        """Count a request that met an unavailable server against *key*'s
        server (or, without a key, the servers found down), and probe
        (:meth:`ServerHealth.failed`)."""
        try:
            # pylibmc's hash() is libmemcached's choice of server for the key.
            index = None if key is None else int(self.hash(key))
        except pylibmc.Error:
            index = None
        self.health.failed(index)

    def _met_unavailable(
        self, exc: BaseException, key: str | bytes | None = None
    ) -> bool:
        """Whether *exc* means a server did not answer; if so, it is counted
        against *key*'s server and the servers are probed
        (:meth:`_count_unavailable`).

        From a proxy, ``SERVER_ERROR`` means the key's server failed, not the
        proxy: the proxy is not counted. libmemcached 1.0.16 takes it as its
        one server failing and fails every call for *retry_timeout*
        (``ServerDown``, measured): all keys would miss. Dropping the
        connection clears that record.
        """
        if self._proxy and isinstance(exc, _SERVER_ERROR):
            self.disconnect_all()
            return True
        if not is_unavailable(exc):
            return False
        self._count_unavailable(key)
        return True

    def _unavailable(
        self, exc: BaseException | None, name: str, keys: Sequence[Any]
    ) -> ServerUnavailable:
        shown = f"{list(keys)!r:.120}"
        if exc is None:
            return ServerUnavailable(
                f"{name} not applied: no server of this client answers (each "
                f"was probed, {self.health.timeout:g} s at most), so nothing was "
                "sent. Requests fail at once until one answers again; the "
                f"servers are asked every {self.health.recheck:g} s.",
                keys,
            )
        return ServerUnavailable(
            f"{name} not applied, the server of {shown} is unavailable: {exc}. "
            "Reads of its keys return misses until it answers again; it is "
            "retried after the retry_timeout behaviour and, once ejected, after "
            "dead_timeout.",
            keys,
        )


_Base: Any = pylibmc.Client
_get = _Base.get
_get_multi = _Base.get_multi
_gets = _Base.gets
