"""mcpool through twemproxy: where keys land, and a server killed under load.

Run: ``.venv/bin/python benchmarks/bench_twemproxy.py [--keys 100000]``

Three loopback memcached servers behind one nutcracker (ketama, MD5,
auto_eject_hosts, server_failure_limit 1, server_retry_timeout 1 s).

1. Ring fingerprint: *--keys* keys written through the proxy, each server's
   items read directly; the fraction of keys that libmemcached's ketama
   (several client settings, same server list) sends to the same server.
2. A server killed, then restarted, under load: 8 threads of get+set
   through a ``ClientPool`` of ``Client.for_proxy`` clients. Per phase:
   requests, errors raised to the caller, misses, writes not stored, median
   and slowest request; and how long after the restart the server takes its
   keys back. The numbers feed docs/scale-out.rst.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections import Counter
from typing import Any

import pylibmc
from pymemcache.client.hash import HashClient  # type: ignore[import-untyped]
from report import print_markdown_table, versions_line

import mcpool
from mcpool import ClientPool, ServerUnavailable
from mcpool.testing import MemcachedServer, Twemproxy, memcached_servers

RINGS: dict[str, dict[str, Any]] = {
    "mcpool.Client defaults (ketama, md5, md5)": {},
    "ketama_weighted, md5": {"ketama": False, "ketama_weighted": True},
    "pylibmc ketama=True only": {
        "ketama": True,
        "hash": "default",
        "ketama_hash": "default",
    },
}


def where(servers: list[MemcachedServer], keys: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, server in enumerate(servers):
        direct = pylibmc.Client([server.address])
        for start in range(0, len(keys), 5000):
            for key in direct.get_multi(keys[start : start + 5000]):
                found[key] = index
    return found


def ring_fingerprint(count: int) -> None:
    with memcached_servers(3) as servers, Twemproxy(servers) as proxy:
        proxied = mcpool.Client.for_proxy(proxy.address, timeout=10)
        keys = [f"ring:{i}" for i in range(count)]
        for start in range(0, count, 1000):
            proxied.set_multi({key: 1 for key in keys[start : start + 1000]})
        placed = where(servers, keys)
        rows = []
        for name, behaviors in RINGS.items():
            addresses = [s.address for s in servers]
            client = mcpool.Client(addresses, behaviors=behaviors)
            # A pool hands out clones: libmemcached's clone may not keep
            # every ring setting (ketama_weighted, for one).
            for label, ring in ((name, client), (f"{name}, a clone", client.clone())):
                same = sum(ring.hash(key) == placed[key] for key in keys)
                rows.append([label, f"{same / len(keys):.1%}"])
        # pymemcache's HashClient (rendezvous hashing), on the same servers.
        for server in servers:
            pylibmc.Client([server.address]).flush_all()
        hashed = HashClient([("127.0.0.1", server.port) for server in servers])
        for key in keys:
            hashed.set(key, b"1")
        by_pymemcache = where(servers, keys)
        same = sum(by_pymemcache.get(key) == placed[key] for key in keys)
        rows.append(["pymemcache HashClient", f"{same / len(keys):.1%}"])
        share = Counter(placed.values())
        rows.append(
            [
                "(twemproxy's share per server)",
                " / ".join(f"{share[i] / len(keys):.1%}" for i in range(3)),
            ]
        )
        print_markdown_table(
            f"Same server as twemproxy's ketama ({len(placed)} of {count} keys found)",
            ["client ring", "keys on the same server"],
            rows,
        )


def failure_run(seconds: float) -> None:
    with memcached_servers(3) as servers, Twemproxy(servers) as proxy:
        pool = ClientPool(mcpool.Client.for_proxy(proxy.address, timeout=2), 8)
        keys = [f"load:{i}" for i in range(300)]
        with pool.reserve() as mc:
            mc.set_multi({key: key for key in keys})
        victim = [k for k, i in where(servers, keys).items() if i == 1]
        phase = ["before"]
        stats: dict[str, Counter[str]] = {}
        latencies: dict[str, list[float]] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def work(index: int) -> None:
            n = index
            while not stop.is_set():
                key = keys[n % len(keys)]
                n += 7
                now = phase[0]
                started = time.perf_counter()
                outcome = []
                try:
                    with pool.reserve() as mc:
                        outcome.append("hit" if mc.get(key) == key else "miss")
                        try:
                            mc.set(key, key)
                            outcome.append("stored")
                        except ServerUnavailable:
                            outcome.append("not stored")
                except Exception as exc:  # noqa: BLE001 - counted
                    outcome.append(f"error {type(exc).__name__}")
                took = time.perf_counter() - started
                with lock:
                    stats.setdefault(now, Counter()).update(outcome + ["requests"])
                    latencies.setdefault(now, []).append(took)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        phase[0] = "killed"
        servers[1].kill()
        time.sleep(seconds)
        phase[0] = "restarted"
        servers[1].start()
        restarted = time.monotonic()
        direct = pylibmc.Client([servers[1].address])
        back = None
        while time.monotonic() - restarted < 30:
            if any(direct.get(key) for key in victim[:20]):
                back = time.monotonic() - restarted
                break
            time.sleep(0.01)
        time.sleep(max(0.0, seconds - (time.monotonic() - restarted)))
        stop.set()
        for thread in threads:
            thread.join()
        pool.close()
    rows = []
    for name in ("before", "killed", "restarted"):
        counts = stats.get(name, Counter())
        times = latencies.get(name, [0.0])
        errors = sum(v for k, v in counts.items() if k.startswith("error"))
        rows.append(
            [
                name,
                str(counts["requests"]),
                str(errors),
                str(counts["miss"]),
                str(counts["not stored"]),
                f"{statistics.median(times) * 1000:.2f}",
                f"{max(times) * 1000:.1f}",
            ]
        )
    print_markdown_table(
        f"A server killed, then restarted, under 8 threads ({seconds:.0f} s a phase)",
        ["phase", "requests", "errors", "misses", "not stored", "median ms", "max ms"],
        rows,
    )
    shown = "never (30 s)" if back is None else f"{back:.2f} s"
    print(f"restarted server written to again after: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    ring_fingerprint(args.keys)
    failure_run(args.seconds)
    print(versions_line("python", "pylibmc", "libmemcached"))


if __name__ == "__main__":
    main()
