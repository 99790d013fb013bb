"""mcpool.Client against a real memcached: bad keys and values, clones, pools.

Every case of the catalogue asserts the error, that the server holds exactly
what it should (no ``injected`` key, nothing half-written), and that the same
client, handed out again by the pool, answers the next request correctly.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pylibmc
import pytest

import mcpool
from mcpool import Client, ClientPool, InvalidKey, ValueTooLarge
from mcpool.testing import MemcachedServer

# Generous: these tests are about keys, not timeouts, and a loaded machine
# can stall a loopback request past the default 0.25 s.
T = 5.0
BIG = b"x" * (2 * 1024 * 1024)  # over memcached's default 1 MiB item limit
INJECTION = "foo\r\nset injected 0 0 8\r\nINJECTED\r\n"


@pytest.fixture(scope="module")
def server() -> Iterator[MemcachedServer]:
    """A server of this module's own: the catalogue flushes it and lists its
    keys."""
    with MemcachedServer() as srv:
        yield srv


def _raw(server: MemcachedServer, command: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(command)
        reply = b""
        while not reply.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def stored(server: MemcachedServer) -> dict[str, bytes]:
    """Every live key on the server and its raw value, read over a socket of
    the test's own (not through the client under test)."""
    # "hash" walks the hash table: "all" walks the LRU queues, and an item
    # that memcached's LRU thread moves from one queue to another while the
    # crawl runs can be passed over (a key just set was missing once, on a
    # loaded machine).
    dump = _raw(server, b"lru_crawler metadump hash\r\n").decode()
    keys = [
        unquote(line.split(" ", 1)[0][len("key=") :])
        for line in dump.splitlines()
        if line.startswith("key=")
    ]
    values = {}
    for key in keys:
        reply = _raw(server, b"get " + key.encode() + b"\r\n")
        if reply.startswith(b"VALUE"):
            header, _, rest = reply.partition(b"\r\n")
            size = int(header.split()[3])
            values[key] = rest[:size]
    return values


class LyingText(str):
    """A str whose methods say it is a valid key and hide its CR LF."""

    # Also claims to be a plain str to code that asks ``key.__class__``.
    __class__ = property(lambda self: str)  # type: ignore[assignment]

    def isascii(self) -> bool:
        return True

    def isprintable(self) -> bool:
        return True

    def __contains__(self, item: object) -> bool:
        return False

    def __len__(self) -> int:
        return 3

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return b"key"


class LyingBytes(bytes):
    """The same for bytes."""

    __class__ = property(lambda self: bytes)  # type: ignore[assignment]

    def isascii(self) -> bool:
        return True

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return "key"

    def __contains__(self, item: object) -> bool:
        return False

    def __len__(self) -> int:
        return 3

    def __bytes__(self) -> bytes:
        return b"key"


# (name, call with the hostile key, what to store first, behaviours)
HOSTILE_CALLS: list[
    tuple[str, Callable[[Any], Callable[[Any], object]], dict[str, Any], dict[str, Any]]
] = [
    ("get", lambda k: lambda mc: mc.get(k), {}, {}),
    ("gets", lambda k: lambda mc: mc.gets(k), {}, {"cas": True}),
    ("get_multi", lambda k: lambda mc: mc.get_multi(["ok", k]), {}, {}),
    (
        "get_multi prefix",
        lambda k: lambda mc: mc.get_multi(["ok"], key_prefix=k),
        {},
        {},
    ),
    ("set", lambda k: lambda mc: mc.set(k, "v"), {}, {}),
    ("add", lambda k: lambda mc: mc.add(k, "v"), {}, {}),
    ("replace", lambda k: lambda mc: mc.replace(k, "v"), {}, {}),
    ("append", lambda k: lambda mc: mc.append(k, "v"), {}, {}),
    ("prepend", lambda k: lambda mc: mc.prepend(k, "v"), {}, {}),
    ("cas", lambda k: lambda mc: mc.cas(k, "v", 1), {}, {"cas": True}),
    ("delete", lambda k: lambda mc: mc.delete(k), {}, {}),
    ("touch", lambda k: lambda mc: mc.touch(k, 10), {}, {}),
    ("incr", lambda k: lambda mc: mc.incr(k), {"n": 1}, {}),
    ("decr", lambda k: lambda mc: mc.decr(k), {"n": 1}, {}),
    ("set_multi", lambda k: lambda mc: mc.set_multi({"ok": "v", k: "v"}), {}, {}),
    (
        "set_multi prefix",
        lambda k: lambda mc: mc.set_multi({"ok": "v"}, key_prefix=k),
        {},
        {},
    ),
    ("add_multi", lambda k: lambda mc: mc.add_multi({"ok": "v", k: "v"}), {}, {}),
    (
        "add_multi prefix",
        lambda k: lambda mc: mc.add_multi({"ok": "v"}, key_prefix=k),
        {},
        {},
    ),
    ("delete_multi", lambda k: lambda mc: mc.delete_multi(["n", k]), {"n": 1}, {}),
    (
        "delete_multi prefix",
        lambda k: lambda mc: mc.delete_multi(["n"], key_prefix=k),
        {"n": 1},
        {},
    ),
    ("incr_multi", lambda k: lambda mc: mc.incr_multi(["n", k]), {"n": 1}, {}),
    (
        "incr_multi prefix",
        lambda k: lambda mc: mc.incr_multi(["n"], key_prefix=k),
        {"n": 1},
        {},
    ),
    ("mapping get", lambda k: lambda mc: mc[k], {}, {}),
    ("mapping contains", lambda k: lambda mc: k in mc, {}, {}),
    ("mapping del", lambda k: lambda mc: mc.__delitem__(k), {}, {}),
    (
        "set_behaviors namespace",
        lambda k: lambda mc: mc.set_behaviors({"namespace": k}),
        {},
        {},
    ),
]


@dataclass
class Case:
    """One bad request: what to store first, what to run, what must follow."""

    name: str
    run: Callable[[Any], object]
    error: type[BaseException] = InvalidKey
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, bytes] | None = None  # None: the same as before
    behaviors: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


CATALOGUE = [
    Case("get CRLF injection", lambda mc: mc.get(INJECTION)),
    Case("get CRLF injection bytes", lambda mc: mc.get(INJECTION.encode())),
    Case("set CRLF injection", lambda mc: mc.set(INJECTION, "v")),
    Case("set CRLF in value position", lambda mc: mc.set("k\r\nget k", "v")),
    Case("get_multi CRLF injection", lambda mc: mc.get_multi(["ok", INJECTION])),
    Case("delete LF", lambda mc: mc.delete("a\nb"), before={"a": "1"}),
    Case("get space", lambda mc: mc.get("a b")),
    Case("set space", lambda mc: mc.set("a b", "v")),
    Case("set tab", lambda mc: mc.set("a\tb", "v")),
    Case("set NUL", lambda mc: mc.set("a\x00b", "v")),
    Case("set DEL", lambda mc: mc.set("a\x7fb", "v")),
    Case("set ESC", lambda mc: mc.set("a\x1bb", "v")),
    Case("set vertical tab", lambda mc: mc.set("a\x0bb", "v")),
    Case("set non-ASCII", lambda mc: mc.set("café", "v")),
    Case("set non-ASCII bytes", lambda mc: mc.set(b"caf\xc3\xa9", "v")),
    Case("set 251 bytes", lambda mc: mc.set("x" * 251, "v")),
    Case("set 250 bytes multibyte", lambda mc: mc.set("é" * 125, "v")),
    Case("set 251 bytes multibyte", lambda mc: mc.set("a" + "é" * 125, "v")),
    Case(
        "get_multi 251 with prefix",
        lambda mc: mc.get_multi(["x" * 248], key_prefix="ns:"),
    ),
    Case("get_multi bad prefix", lambda mc: mc.get_multi(["k"], key_prefix="a b")),
    Case(
        "set_multi 251 with prefix stores nothing",
        lambda mc: mc.set_multi({"ok": "v", "x" * 248: "v"}, key_prefix="ns:"),
    ),
    Case(
        "namespace counts toward 250",
        lambda mc: mc.set("x" * 248, "v"),
        behaviors={"namespace": "ns:"},
    ),
    Case("get empty", lambda mc: mc.get("")),
    Case("set empty", lambda mc: mc.set("", "v")),
    Case("get_multi with an empty key", lambda mc: mc.get_multi(["a", ""])),
    Case("get None", lambda mc: mc.get(None)),
    Case("set int", lambda mc: mc.set(42, "v")),
    Case("get bytearray", lambda mc: mc.get(bytearray(b"a"))),
    Case("set lone surrogate", lambda mc: mc.set("\ud800", "v")),
    Case(
        "set_multi one bad key stores nothing",
        lambda mc: mc.set_multi({"good1": "v", "a b": "v", "good2": "v"}),
    ),
    Case(
        "add_multi one bad key stores nothing",
        lambda mc: mc.add_multi({"good1": "v", "a\nb": "v"}),
    ),
    Case(
        "delete_multi one bad key deletes nothing",
        lambda mc: mc.delete_multi(["a", "a b"]),
        before={"a": "1"},
    ),
    Case(
        "incr_multi one bad key increments nothing",
        lambda mc: mc.incr_multi(["n", "n m"]),
        before={"n": 1},
    ),
    Case("add space", lambda mc: mc.add("a b", "v")),
    Case("replace tab", lambda mc: mc.replace("a\tb", "v")),
    Case("append CR", lambda mc: mc.append("a\r", "v")),
    Case("prepend NUL", lambda mc: mc.prepend("a\x00", "v")),
    Case("incr space", lambda mc: mc.incr("n m"), before={"n": 1}),
    Case("decr empty", lambda mc: mc.decr("")),
    Case("touch DEL", lambda mc: mc.touch("a\x7f", 10)),
    Case("gets space", lambda mc: mc.gets("a b"), behaviors={"cas": True}),
    Case("cas space", lambda mc: mc.cas("a b", "v", 1), behaviors={"cas": True}),
    Case("mapping get space", lambda mc: mc["a b"]),
    Case("mapping set space", lambda mc: mc.__setitem__("a b", "v")),
    Case("mapping del space", lambda mc: mc.__delitem__("a b")),
    Case("mapping contains space", lambda mc: "a b" in mc),
    # Keys that lie about themselves: the checks read the bytes, not the
    # methods of a str or bytes subclass.
    *[
        Case(f"{name} {type(key).__name__}", run(key), before=before, behaviors=bh)
        for key in (LyingText(INJECTION), LyingBytes(INJECTION.encode()))
        for name, run, before, bh in HOSTILE_CALLS
    ],
    # Oversize values.
    Case(
        "set oversize drops the old value",
        lambda mc: mc.set("big", BIG),
        error=ValueTooLarge,
        before={"big": "old"},
        after={},
    ),
    Case(
        "replace oversize drops the old value",
        lambda mc: mc.replace("big", BIG),
        error=ValueTooLarge,
        before={"big": "old"},
        after={},
    ),
    Case(
        "append oversize drops the old value",
        lambda mc: mc.append("big", BIG),
        error=ValueTooLarge,
        before={"big": "old"},
        after={},
    ),
    Case(
        "add oversize stores nothing",
        lambda mc: mc.add("big", BIG),
        error=ValueTooLarge,
        after={},
    ),
    Case(
        "set_multi one oversize stores the others",
        lambda mc: mc.set_multi({"m1": "a", "m2": BIG, "m3": "c"}),
        error=ValueTooLarge,
        before={"m1": "old", "m2": "old", "m3": "old"},
        after={"m1": b"a", "m3": b"c"},
    ),
    Case(
        "set_multi with prefix one oversize",
        lambda mc: mc.set_multi({"m1": "a", "m2": BIG}, key_prefix="p:"),
        error=ValueTooLarge,
        before={"p:m2": "old"},
        after={"p:m1": b"a"},
    ),
    Case(
        "add_multi one oversize adds the others",
        lambda mc: mc.add_multi({"m1": "a", "m2": BIG, "m3": "c"}),
        error=ValueTooLarge,
        before={"m3": "old"},
        after={"m1": b"a", "m3": b"old"},
    ),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=str)
def test_bad_request_is_refused_and_leaves_client_pool_and_server_correct(
    server: MemcachedServer, case: Case
) -> None:
    master = Client([server.address], timeout=T, behaviors=case.behaviors)
    master.flush_all()
    for key, value in case.before.items():
        assert master.set(key, value)
    expected = (
        {key: str(value).encode() for key, value in case.before.items()}
        if case.after is None
        else case.after
    )
    pool = ClientPool(master, 1)

    with pytest.raises(case.error) as info:
        with pool.reserve() as mc:
            first = mc
            case.run(mc)
    assert str(info.value)

    assert "injected" not in stored(server)
    assert stored(server) == expected
    with pool.reserve() as mc:
        assert mc is first, "a bad key or value must not cost the pool its client"
        assert mc.set("next", "answer")
        assert mc.get("next") == "answer"
        assert mc.get_multi(["next", "missing"]) == {"next": "answer"}
    stats = pool.stats()
    assert (stats.created, stats.discarded, stats.in_use) == (1, 0, 0)


def test_catalogue_is_large_enough() -> None:
    assert len(CATALOGUE) >= 25


def test_valid_keys_at_the_limits_work(server: MemcachedServer) -> None:
    mc = Client([server.address], timeout=T)
    key = "k" * 250
    assert mc.set(key, "v")
    assert mc.get(key) == "v"
    assert mc.get_multi(["k" * 247], key_prefix="kkk") == {"k" * 247: "v"}
    assert mc.set_multi({"x" * 248: "w"}, key_prefix="ns") == []
    assert mc.get("ns" + "x" * 248) == "w"
    assert mc.delete_multi(["x" * 248], key_prefix=b"ns")
    assert mc.get(b"!~%") is None


def test_the_whole_api_round_trips(server: MemcachedServer) -> None:
    mc = Client([server.address], timeout=T, behaviors={"cas": True})
    mc.flush_all()
    assert mc.set("a", "1") and mc.get("a") == "1"
    assert mc.add("b", 2) and not mc.add("b", 3)
    assert mc.replace("b", 4) and mc.get("b") == 4
    assert not mc.replace("nope", 1)
    assert mc.set("s", "mid") and mc.append("s", "-end") and mc.prepend("s", "start-")
    assert mc.get("s") == "start-mid-end"
    assert mc.incr("b", 5) == 9 and mc.decr("b") == 8
    value, cas = mc.gets("b")
    assert value == 8 and mc.cas("b", 10, cas) and not mc.cas("b", 11, cas)
    assert mc.touch("b", 100) and not mc.touch("nope", 100)
    mc["m"] = "mapped"
    assert mc["m"] == "mapped" and "m" in mc and "nope" not in mc
    del mc["m"]
    with pytest.raises(KeyError):
        mc["m"]
    assert mc.set_multi({"x": 1, "y": 2}, key_prefix="p:") == []
    assert mc.add_multi({"x": 5, "z": 3}, key_prefix="p:") == ["x"]
    assert mc.get_multi(("x", "y", "z", "w"), key_prefix="p:") == {
        "x": 1,
        "y": 2,
        "z": 3,
    }
    mc.incr_multi(["x", "y"], key_prefix="p:", delta=10)
    assert mc.get_multi(iter(["x", "y"]), key_prefix="p:") == {"x": 11, "y": 12}
    assert mc.delete_multi(["x", "y"], key_prefix="p:")
    assert not mc.delete_multi(["x", "z"], key_prefix="p:")
    assert mc.delete("a") and not mc.delete("a")
    with pytest.raises(pylibmc.NotFound):
        mc.incr("nope")


def test_clone_keeps_the_class_and_its_rules(server: MemcachedServer) -> None:
    master = Client([server.address], timeout=T, behaviors={"namespace": "ns:"})
    clone = master.clone()
    assert type(clone) is Client
    assert clone.addresses == master.addresses
    assert clone.get_behaviors() == master.get_behaviors()
    with pytest.raises(InvalidKey, match="3-byte prefix"):
        clone.get("x" * 248)
    assert clone.set("k", "v") and master.get("k") == "v"
    assert _raw(server, b"get ns:k\r\n").startswith(b"VALUE ns:k")


def test_subclass_attributes_survive_clone(server: MemcachedServer) -> None:
    class Tagged(Client):
        tag = "class"

    master = Tagged([server.address])
    master.tag = "instance"
    clone = master.clone()
    assert type(clone) is Tagged and clone.tag == "instance"


def test_pool_hands_out_validating_clients(server: MemcachedServer) -> None:
    pool = ClientPool(Client([server.address], timeout=T), 2)
    with pool.reserve() as first, pool.reserve() as second:
        assert type(first) is Client and type(second) is Client
        assert first is not second
        with pytest.raises(InvalidKey):
            first.set("a b", "v")
        with pytest.raises(InvalidKey):
            second.get_multi(["ok", "no\r\n"])


def test_clones_route_every_key_like_their_master() -> None:
    # pylibmc's hash() is the index of the server a key goes to.
    addresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    master = Client(addresses)
    clone = master.clone().clone()
    fresh = Client(addresses)
    keys = [f"key:{i}" for i in range(2000)]
    assert [clone.hash(k) for k in keys] == [master.hash(k) for k in keys]
    assert [fresh.hash(k) for k in keys] == [master.hash(k) for k in keys]
    assert {master.hash(k) for k in keys} == {0, 1, 2}


def test_namespace_is_checked(server: MemcachedServer) -> None:
    with pytest.raises(InvalidKey, match="namespace"):
        Client([server.address], timeout=T, behaviors={"namespace": "a b"})
    mc = Client([server.address], timeout=T)
    with pytest.raises(InvalidKey, match="namespace"):
        mc.set_behaviors({"namespace": "a\r\n"})
    assert mc.set("still", "fine") and mc.get("still") == "fine"


def test_defaults_are_applied_and_overridable(server: MemcachedServer) -> None:
    behaviors = Client([server.address]).get_behaviors()
    assert behaviors["distribution"] == "consistent ketama"
    assert behaviors["hash"] == "md5" and behaviors["ketama_hash"] == 1
    assert behaviors["auto_eject"] and behaviors["failure_limit"] == 2
    assert (behaviors["retry_timeout"], behaviors["dead_timeout"]) == (1, 3)
    assert behaviors["tcp_nodelay"] and behaviors["tcp_keepalive"]
    assert (behaviors["connect_timeout"], behaviors["_poll_timeout"]) == (250, 250)
    assert behaviors["receive_timeout"] == behaviors["send_timeout"] == 250_000

    custom = Client(
        [server.address],
        behaviors={"tcp_nodelay": False, "_poll_timeout": 900},
        timeout=0.5,
    ).get_behaviors()
    assert not custom["tcp_nodelay"]
    assert (custom["connect_timeout"], custom["_poll_timeout"]) == (500, 900)
    assert custom["receive_timeout"] == 500_000


def test_bad_arguments_are_refused_early(server: MemcachedServer) -> None:
    with pytest.raises(ValueError, match="both a username and a password"):
        Client([server.address], timeout=T, username="u")
    with pytest.raises(ValueError, match="binary protocol"):
        Client([server.address], timeout=T, binary=False, username="u", password="p")
    with pytest.raises(ValueError, match="positive"):
        Client([server.address], timeout=0)


def test_value_too_large_is_benign_for_the_pool_and_catchable_as_pylibmc() -> None:
    exc = ValueTooLarge("too big", ["k"])
    assert isinstance(exc, pylibmc.TooBig)
    assert not mcpool.is_fatal_error(exc)
    assert not mcpool.is_fatal_error(mcpool.ServerUnavailable("down", ["k"]))
    assert isinstance(mcpool.ServerUnavailable("down"), pylibmc.Error)


def test_value_too_large_lists_the_keys(server: MemcachedServer) -> None:
    mc = Client([server.address], timeout=T)
    with pytest.raises(ValueTooLarge) as info:
        mc.add_multi({"exists": "new", "huge": BIG, "fresh": "v"}, key_prefix="t:")
    # 'exists' was absent, so all but 'huge' went in.
    assert info.value.keys == ["huge"] and info.value.failed == ["huge"]
    with pytest.raises(ValueTooLarge) as info:
        mc.add_multi({"exists": "again", "huge": BIG}, key_prefix="t:")
    assert info.value.keys == ["huge"]
    assert info.value.failed == ["exists", "huge"]
    assert mc.get("t:exists") == "new"


@pytest.mark.parametrize(
    "namespace", [LyingText(INJECTION), LyingBytes(INJECTION.encode())], ids=repr
)
def test_a_lying_namespace_is_refused(
    server: MemcachedServer, namespace: str | bytes
) -> None:
    mc = Client([server.address], timeout=T)
    mc.flush_all()
    with pytest.raises(InvalidKey, match="namespace"):
        Client([server.address], timeout=T, behaviors={"namespace": namespace})
    assert "injected" not in stored(server)
    assert mc.set("still", "fine") and mc.get("still") == "fine"


def test_str_subclass_keys_that_tell_the_truth_work(server: MemcachedServer) -> None:
    class Text(str):
        pass

    mc = Client([server.address], timeout=T)
    assert mc.set(Text("sub:a"), 1) and mc.get(Text("sub:a")) == 1
    assert mc.get_multi([Text("a"), "b"], key_prefix=Text("sub:")) == {"a": 1}
    assert mc.set_multi({Text("b"): 2}, key_prefix=Text("sub:")) == []
    assert mc.delete_multi([Text("a"), b"b"], key_prefix=b"sub:")


@pytest.mark.parametrize("method", ["set_multi", "add_multi"])
@pytest.mark.parametrize(
    "bad_value",
    [lambda: None, "lone \ud800 surrogate"],
    ids=["unpicklable", "unencodable"],
)
def test_a_value_that_cannot_be_serialised_stores_nothing(
    server: MemcachedServer, method: str, bad_value: object
) -> None:
    mc = Client([server.address], timeout=T)
    mc.flush_all()
    mapping = {"first": "a", "second": 2, "bad": bad_value, "last": b"z"}
    with pytest.raises(Exception) as info:  # noqa: B017 - whatever pickle raises
        getattr(mc, method)(mapping, key_prefix="p:")
    assert not isinstance(info.value, pylibmc.Error)
    assert stored(server) == {}
    assert mc.set_multi({"first": "a"}, key_prefix="p:") == []
    assert mc.get_multi(["first"], key_prefix="p:") == {"first": "a"}


def test_clients_are_made_and_cloned_without_noise(server: MemcachedServer) -> None:
    # pylibmc 1.6.3 built for Python 3.13 prints 31 "Exception ignored in
    # PyMapping_HasKeyString()" tracebacks for each client made without
    # behaviours; mcpool always passes them. A fresh interpreter, so that
    # nothing else has written to its stderr.
    script = f"""
import mcpool
mc = mcpool.Client([{server.address!r}], timeout={T})
mc.clone().clone()
mc.set_behaviors({{"namespace": "ns:"}})
pool = mcpool.ClientPool(mc, 2)
with pool.reserve() as a, pool.reserve() as b:
    a.set("noise", 1)
with mcpool.ThreadMappedPool(mc).reserve() as c:
    c.get("noise")
print("done")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout == "done\n", result.stderr
    assert result.stderr == ""


def test_gets_from_many_threads_reads_each_its_own_key(server: MemcachedServer) -> None:
    # pylibmc's gets frees the bytes of a str key before it sends them with
    # the GIL released; another thread's new key could take that memory, so
    # gets returned the other key's value (a few in a thousand here).
    # mcpool.Client hands pylibmc bytes it keeps alive.
    master = Client([server.address], timeout=T, behaviors={"cas": True})
    for i in range(8):
        master.set(f"own-{i}", i)
    wrong: list[tuple[int, Any]] = []
    start = threading.Barrier(8)

    def read(i: int) -> None:
        mc = master.clone()
        start.wait()
        for n in range(2000):
            mc.set(f"oth-{i}", -n)  # a new key of the same size each time
            value, cas_id = mc.gets(f"own-{i}")
            if value != i or cas_id is None:
                wrong.append((i, value))

    with ThreadPoolExecutor(8) as executor:
        list(executor.map(read, range(8)))
    assert wrong == []
