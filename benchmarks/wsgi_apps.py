"""The Flask apps :mod:`bench_wsgi` serves: one route, one memcached get, and
a different way to get the client in each.

Every app has the Flask example's ``GET /``: read the greeting, set it on a
miss. Only the client handling differs:

- ``none``: no memcached at all, the same greeting from a constant: what
  the server and Flask cost alone, the ceiling for every other variant.
- ``connect``: a new ``pylibmc.Client`` per request, disconnected after it.
- ``pylibmc-pool``: ``pylibmc.ClientPool`` of ``pylibmc.Client`` by hand,
  ``reserve(block=True)``.
- ``mcpool-pool``: ``mcpool.ClientPool`` of ``mcpool.Client`` by hand,
  ``with pool.reserve()``: the same client and pool as the extension's.
- ``mcpool-thread-pool``: ``mcpool.ThreadMappedPool`` by hand, the same pool
  as the extension's with ``MCPOOL_POOL=thread``.
- ``extension``: the Flask example itself (``examples.flask_app``), on
  :mod:`mcpool.flask` (``MCPOOL_POOL`` from the environment picks the pool).

All use memcached's text protocol, the default of both client classes.

gunicorn loads them as ``"benchmarks.wsgi_apps:create_app('connect')"`` with
the repository root as its working directory; ``MCPOOL_SERVERS`` and
``MCPOOL_POOL_SIZE`` come from the environment.
"""

from __future__ import annotations

import os
from typing import Any

import pylibmc
from flask import Flask

import mcpool
from examples import flask_app

GREETING = "hello from memcached"


def _greeting(mc: Any) -> str:
    greeting: str | None = mc.get(flask_app.GREETING_KEY)
    if greeting is None:
        greeting = GREETING
        mc.set(flask_app.GREETING_KEY, greeting)
    return greeting


def create_app(mode: str) -> Flask:
    """The app for *mode* (see the module docstring)."""
    if mode == "extension":
        return flask_app.create_app()
    servers = os.environ.get("MCPOOL_SERVERS", "127.0.0.1:11211").split(",")
    size = int(os.environ.get("MCPOOL_POOL_SIZE", "10"))
    app = Flask(__name__)

    if mode == "none":

        def index() -> str:
            return GREETING

    elif mode == "connect":

        def index() -> str:
            mc = pylibmc.Client(servers)
            try:
                return _greeting(mc)
            finally:
                mc.disconnect_all()

    elif mode == "pylibmc-pool":
        pylibmc_pool = pylibmc.ClientPool(pylibmc.Client(servers), size)

        def index() -> str:
            with pylibmc_pool.reserve(block=True) as mc:
                return _greeting(mc)

    elif mode in ("mcpool-pool", "mcpool-thread-pool"):
        kind = mcpool.ClientPool if mode == "mcpool-pool" else mcpool.ThreadMappedPool
        mcpool_pool = kind(mcpool.Client(servers), size)

        def index() -> str:
            with mcpool_pool.reserve() as mc:
                return _greeting(mc)

    else:
        raise ValueError(f"unknown mode {mode!r}")

    app.add_url_rule("/", "index", index)
    return app
