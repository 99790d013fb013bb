"""The WSGI entry point the deployment tests serve.

A tiny app on :class:`mcpool.ClientPool`: ``GET /`` does one memcached
``get``; ``GET /count/<name>`` counts views of *name* (``add`` + ``incr``), so
a reply read from another process's socket shows up as a wrong count.
Configured from the environment: ``MCPOOL_SERVERS`` (comma-separated) and
``MCPOOL_POOL_SIZE``. With ``DEPLOY_USE_POOL_AT_IMPORT=1`` the pool opens a
connection while the module is imported, so that servers which import the
app before forking workers hand them a pool with a live client in it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from typing import Any

import pylibmc

from mcpool import ClientPool

GREETING_KEY = "deploy:greeting"

servers = os.environ.get("MCPOOL_SERVERS", "127.0.0.1:11211").split(",")
pool = ClientPool(
    pylibmc.Client(servers, binary=True), int(os.environ.get("MCPOOL_POOL_SIZE", "4"))
)

if os.environ.get("DEPLOY_USE_POOL_AT_IMPORT") == "1":
    with pool.reserve() as mc:
        mc.get(GREETING_KEY)


def application(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    with pool.reserve() as mc:
        if path == "/":
            greeting = mc.get(GREETING_KEY)
            if greeting is None:
                greeting = "hello from memcached"
                mc.set(GREETING_KEY, greeting)
            body = greeting
        elif path.startswith("/count/"):
            name = path[len("/count/") :]
            key = "deploy:count:" + hashlib.sha1(name.encode()).hexdigest()
            mc.add(key, 0)
            body = f"{name}: {mc.incr(key)}\n"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]


app = application
