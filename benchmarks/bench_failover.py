"""The measured effect of mcpool.Client's defaults, against libmemcached's.

Run: ``.venv/bin/python benchmarks/bench_failover.py [--window 3]``

Three loopback memcached servers; one client does get+set traffic over keys
of all three while one server is paused (SIGSTOP), killed (SIGKILL), then
restarted on its port. The same scenario runs with a plain
``pylibmc.Client`` (libmemcached's defaults) and with ``mcpool.Client``.
Then, side by side: how many keys move when a server leaves the list
(modula against ketama), and request latency with TCP_NODELAY and keepalive
off and on. The numbers feed the defaults table in docs/failover.rst.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pylibmc
from report import versions_line

from mcpool import Client, ServerUnavailable
from mcpool.testing import MemcachedServer, memcached_servers


def keys_by_server(mc: Any, per_server: int = 20) -> list[list[str]]:
    found: list[list[str]] = [[], [], []]
    i = 0
    while min(map(len, found)) < per_server:
        key = f"bench:{i}"
        if len(found[mc.hash(key)]) < per_server:
            found[mc.hash(key)].append(key)
        i += 1
    return found


def traffic(mc: Any, keys: list[str], window: float) -> dict[str, Any]:
    """get+set over *keys* for *window* seconds (a request already started
    finishes); count outcomes and time each request."""
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    deadline = time.monotonic() + window
    i = 0
    while time.monotonic() < deadline:
        key = keys[i % len(keys)]
        i += 1
        for op in ("get", "set"):
            started = time.monotonic()
            try:
                if op == "get":
                    outcomes["hit" if mc.get(key) == key else "miss"] += 1
                else:
                    outcomes["stored" if mc.set(key, key) else "not stored"] += 1
            except ServerUnavailable:
                outcomes[f"{op} ServerUnavailable"] += 1
            except pylibmc.Error as exc:
                outcomes[f"{op} raised {type(exc).__name__}"] += 1
            latencies.append(time.monotonic() - started)
    return {
        "requests": len(latencies),
        "slowest_s": round(max(latencies), 3),
        "read_errors": sum(n for o, n in outcomes.items() if o.startswith("get ")),
        "write_errors": sum(n for o, n in outcomes.items() if o.startswith("set ")),
        "outcomes": dict(outcomes),
    }


def until(condition: Callable[[], bool], limit: float) -> str:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if condition():
            return f"{time.monotonic() - started:.1f} s"
        time.sleep(0.05)
    return f"not within {limit:.0f} s"


def lands_on(mc: Any, server: MemcachedServer, key: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            mc.set(key, "probe")
        except pylibmc.Error:
            return False
        plain = pylibmc.Client([server.address])
        try:
            return bool(plain.get(key) == "probe")
        except pylibmc.Error:
            return False

    return check


def scenario(name: str, make: Callable[[list[str]], Any], window: float) -> None:
    with memcached_servers(3) as servers:
        mc = make([s.address for s in servers])
        keys = keys_by_server(mc)
        everything = keys[0] + keys[1] + keys[2]
        for key in everything:
            mc.set(key, key)
        print(f"\n## {name}")
        servers[1].pause()
        print("  server 2 paused: ", traffic(mc, keys[1] + keys[0], window))
        servers[1].resume()
        print(
            "  after SIGCONT, its keys hit again:",
            until(lambda: _hits(mc, keys[1][0]), 30),
        )
        servers[2].kill()
        print("  server 3 killed: ", traffic(mc, keys[2] + keys[0], window))
        moved = until(
            lambda: (
                lands_on(mc, servers[0], keys[2][0])()
                or lands_on(mc, servers[1], keys[2][0])()
            ),
            30,
        )
        print("  its keys stored on another server after:", moved)
        servers[2].start()
        print(
            "  restarted on its port, used again after:",
            until(lands_on(mc, servers[2], keys[2][1]), 30),
        )


def _hits(mc: Any, key: str) -> bool:
    try:
        return bool(mc.get(key) == key)
    except pylibmc.Error:
        return False


def key_movement() -> None:
    three = [f"127.0.0.1:{port}" for port in (1, 2, 3)]
    keys = [f"user:{i}" for i in range(30000)]
    print("\n## keys that move when server 3 of 3 leaves the list")
    for name, behaviors in (
        ("modula (libmemcached default)", {}),
        (
            "ketama + md5 (mcpool)",
            {"ketama": True, "hash": "md5", "ketama_hash": "md5"},
        ),
    ):
        before = pylibmc.Client(three, behaviors=behaviors)
        after = pylibmc.Client(three[:2], behaviors=behaviors)
        survivors = [k for k in keys if before.hash(k) != 2]
        moved = sum(before.hash(k) != after.hash(k) for k in survivors)
        print(f"  {name:<32} {moved / len(survivors):6.1%} of the other servers' keys")


def socket_options(rounds: int, ops: int) -> None:
    print(f"\n## socket options: median µs per request, {rounds} rounds x {ops}")
    with MemcachedServer() as server:
        clients = {
            "nodelay off": Client(
                [server.address],
                timeout=5,
                behaviors={"tcp_nodelay": False, "tcp_keepalive": False},
            ),
            "nodelay on": Client(
                [server.address],
                timeout=5,
                behaviors={"tcp_nodelay": True, "tcp_keepalive": False},
            ),
            "nodelay+keepalive": Client([server.address], timeout=5),
        }
        for size in (100, 16 * 1024, 200 * 1024):
            value = b"v" * size
            times: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(rounds):
                for name, mc in clients.items():
                    started = time.perf_counter()
                    for _ in range(ops):
                        mc.set("sock", value)
                        mc.get("sock")
                    times[name].append((time.perf_counter() - started) / ops * 1e6)
            row = "  ".join(
                f"{name} {statistics.median(t):8.1f}" for name, t in times.items()
            )
            print(f"  set+get {size:>7} B: {row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--ops", type=int, default=200)
    args = parser.parse_args()
    print(versions_line("pylibmc", "libmemcached"))
    scenario("libmemcached defaults (pylibmc.Client)", pylibmc.Client, args.window)
    scenario("mcpool.Client defaults", Client, args.window)
    key_movement()
    socket_options(args.rounds, args.ops)


if __name__ == "__main__":
    main()
