"""pylibmc's pooling example, a Werkzeug page-view counter, on mcpool.

pylibmc's documentation shows a Werkzeug app that reserves a client from a
``pylibmc.ClientPool`` filled with one clone per server thread and counts
views under the raw URL path as the key. Here:

- :class:`mcpool.PoolMiddleware` hands each request a client at
  ``environ["mcpool.client"]``, reserved on first use and returned when the
  server closes the response. Requests for ``/favicon.ico`` never touch
  memcached and hold nothing.
- The key is made from the path with :func:`mcpool.safe_key`: a raw path may
  hold spaces, control bytes, ``\\r\\n`` (a protocol injection in the text
  protocol) or more than 250 bytes, none of which memcached accepts as a
  key. :class:`mcpool.Client` would refuse such a key with
  :class:`mcpool.InvalidKey`; ``safe_key`` maps any path to a valid key,
  readable and unique (it ends with a digest of the whole path).
- The pool is bounded and fair, waits up to two seconds for a client when
  every thread is busy, and replaces a client whose connection broke.

Run it (starts its own memcached on a free loopback port unless
``MCPOOL_SERVERS`` names servers)::

    .venv/bin/python examples/werkzeug_app.py [--port 8000]
    curl http://127.0.0.1:8000/some/page
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from typing import Any

from werkzeug.serving import run_simple
from werkzeug.wrappers import Request, Response

import mcpool
from mcpool.client import DEFAULT_TIMEOUT


def page_key(path: str) -> str:
    """A valid memcached key for any URL path."""
    return mcpool.safe_key(path, prefix="pageviews:")


@Request.application  # type: ignore[arg-type,unused-ignore]
def count_views(request: Request) -> Response:
    if request.path == "/favicon.ico":
        return Response(status=404)
    mc = request.environ["mcpool.client"]
    key = page_key(request.path)
    # add() is a no-op when the counter exists; incr() is atomic on the server.
    mc.add(key, 0)
    views = mc.incr(key)
    return Response(f"{request.path} has {views} views\n", mimetype="text/plain")


def create_app(
    servers: list[str], threads: int = 8, timeout: float = DEFAULT_TIMEOUT
) -> Any:
    """The counter wrapped in :class:`mcpool.PoolMiddleware` on a pool of
    *threads* clients (one per server thread, so no request waits); *timeout*
    is the clients' limit per server operation, :class:`mcpool.Client`'s."""
    master = mcpool.Client(servers, timeout=timeout)
    pool = mcpool.ClientPool(master, threads)
    return mcpool.PoolMiddleware(count_views, pool)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(list(argv) if argv is not None else None)
    servers = [s for s in os.environ.get("MCPOOL_SERVERS", "").split(",") if s]
    if servers:
        run_simple("127.0.0.1", args.port, create_app(servers), threaded=True)
        return
    from mcpool.testing import MemcachedServer

    with MemcachedServer() as server:
        print(f"memcached on {server.address}")
        run_simple("127.0.0.1", args.port, create_app([server.address]), threaded=True)


if __name__ == "__main__":
    main()
