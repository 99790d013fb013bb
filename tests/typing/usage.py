"""What a type checker sees of mcpool, checked with ``mypy --strict``.

Each ``assert_type`` states a type mypy must infer. Each line ending in
``# type: ignore[code]`` must be an error with that code: under --strict an
ignore that covers no error is an error itself, so the file passes only when
every wrong use below is caught. tests/test_typing.py also strips those
comments and checks that mypy reports exactly these lines.

Never run; only type-checked.
"""

from __future__ import annotations

from collections.abc import Iterator

import pylibmc
from flask import Flask, Response, stream_with_context
from typing_extensions import assert_type

import mcpool
from mcpool.flask import MemcachePool

# -- the safe client, pooled -------------------------------------------------

pool = mcpool.ClientPool(mcpool.Client(["127.0.0.1:11211"]), 8)
assert_type(pool, mcpool.ClientPool[mcpool.Client])
with pool.reserve() as mc:
    assert_type(mc, mcpool.Client)
    assert_type(mc.set("k", "v"), bool)
    assert_type(mc.incr("hits"), int)
    mc.gett("k")  # type: ignore[attr-defined]
    mc.set("k")  # type: ignore[call-arg]
    mc.get(42)  # type: ignore[arg-type]

reservation = pool.reserve()
assert_type(reservation, mcpool.Reservation[mcpool.Client])
lease = pool.checkout()
assert_type(lease, mcpool.Lease[mcpool.Client])
assert_type(lease.item, mcpool.Client)
with lease as leased:
    assert_type(leased, mcpool.Client)

# -- a plain pylibmc client, pooled ------------------------------------------

plain = mcpool.ClientPool(pylibmc.Client(["127.0.0.1:11211"], binary=True), 4)
assert_type(plain, mcpool.ClientPool[pylibmc.Client])
with plain.reserve() as raw:
    assert_type(raw, pylibmc.Client)
    raw.gett("k")  # type: ignore[attr-defined]

mcpool.ClientPool("127.0.0.1:11211", 4)  # type: ignore[arg-type]

# A pool made empty and filled later (as with pylibmc) needs its type.
later: mcpool.ClientPool[mcpool.Client] = mcpool.ClientPool()
later.fill(mcpool.Client(["127.0.0.1:11211"]), 4)
later.fill(pylibmc.Client(["127.0.0.1:11211"]), 4)  # type: ignore[arg-type]
empty = mcpool.ClientPool()  # type: ignore[var-annotated]

# -- one client per thread ---------------------------------------------------

threads = mcpool.ThreadMappedPool(mcpool.Client(["127.0.0.1:11211"]))
assert_type(threads, mcpool.ThreadMappedPool[mcpool.Client])
binding = threads.reserve()
assert_type(binding, mcpool.ThreadBinding[mcpool.Client])
with binding as bound:
    assert_type(bound, mcpool.Client)
assert_type(threads.checkout(), mcpool.ThreadLease[mcpool.Client])
assert_type(threads.checkout().item, mcpool.Client)

# -- any other resource ------------------------------------------------------

generic = mcpool.Pool(lambda: bytearray(), max_size=2)
assert_type(generic, mcpool.Pool[bytearray])
with generic.reserve() as buffer:
    assert_type(buffer, bytearray)

# -- the Flask extension -----------------------------------------------------

memcache = MemcachePool()
assert_type(memcache.client, pylibmc.Client)
assert_type(memcache.pool, mcpool.ClientPool[pylibmc.Client])
with memcache.reserve() as reserved:
    assert_type(reserved, pylibmc.Client)
memcache.client.gett("k")  # type: ignore[attr-defined]
memcache.pool.reserv()  # type: ignore[attr-defined]


def create_app() -> Flask:
    app = Flask(__name__)
    memcache.init_app(app)
    keys = ["a", "b"]

    # The streaming pattern of docs/flask.rst, as written there.
    @app.get("/report")
    def report() -> Response:
        def rows() -> Iterator[str]:
            for key in keys:
                yield f"{key}: {memcache.client.get(key)}\n"

        return app.response_class(stream_with_context(rows()), mimetype="text/plain")

    return app
