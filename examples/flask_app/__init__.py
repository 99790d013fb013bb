"""A Flask app on mcpool: an app factory with the :mod:`mcpool.flask` extension.

Routes:

- ``GET /`` — one memcached ``get`` per request (and a ``set`` on the first
  request, when the greeting is missing): the route the deployment tests
  and benchmarks drive.
- ``GET /count/<path>`` — a per-path view counter (``add`` + ``incr``), keyed
  by :func:`mcpool.safe_key` of the path, never the raw path.
- ``GET /stream`` — a streamed body that reads memcached while it streams.
- ``GET /health`` — no memcached at all: holds no client.

Configuration comes from environment variables with the extension's names,
read by :func:`mcpool.flask.config_from_env` (``MCPOOL_SERVERS=127.0.0.1:11211,...``,
``MCPOOL_POOL_SIZE=8``, ``MCPOOL_POOL=queue``, ``MCPOOL_BEHAVIORS='{"tcp_nodelay":
true}'``; see ``docs/operations.rst``), then from ``create_app(config)``. The
default server is 127.0.0.1:11211.

Run it from the repository root (start a memcached first, for instance
``memcached -l 127.0.0.1 -p 11211 &``):

- Werkzeug's development server, a thread per request::

      flask --app examples.flask_app run --with-threads

- waitress (``pip install waitress``), a fixed pool of threads::

      waitress-serve --threads 8 --call examples.flask_app:create_app

- gunicorn with threaded workers; give the pool as many clients as a worker
  has threads, so that no request waits for one::

      MCPOOL_POOL_SIZE=8 gunicorn -k gthread -w 2 --threads 8 \\
          -b 127.0.0.1:8000 "examples.flask_app:create_app()"

- gunicorn with ``--preload``: the app, its master client and its pool are
  made once in the arbiter and the workers are forked from it. That is
  safe: the pool opens no connection until a request needs one, and a forked
  worker never uses or frees a client made before the fork::

      gunicorn -k gthread -w 2 --threads 8 --preload \\
          -b 127.0.0.1:8000 "examples.flask_app:create_app()"

Then ``curl http://127.0.0.1:8000/`` and ``flask --app examples.flask_app
mcpool ping``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flask import Flask, Response, stream_with_context

from mcpool import safe_key
from mcpool.flask import MemcachePool, config_from_env

__all__ = ["GREETING_KEY", "create_app", "memcache"]

#: The key ``GET /`` reads.
GREETING_KEY = "flask_app:greeting"

memcache = MemcachePool()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Make the app: environment first, then *config* on top.

    >>> app = create_app({"MCPOOL_SERVERS": ["127.0.0.1:11211"]})  # doctest: +SKIP
    """
    app = Flask(__name__)
    config_from_env(app)
    if config:
        app.config.update(config)
    memcache.init_app(app)

    @app.get("/")
    def index() -> str:
        mc = memcache.client
        greeting: str | None = mc.get(GREETING_KEY)
        if greeting is None:  # the first request after a (re)start only
            greeting = "hello from memcached"
            mc.set(GREETING_KEY, greeting)
        return greeting

    @app.get("/count/<path:path>")
    def count(path: str) -> str:
        mc = memcache.client
        key = safe_key(path, prefix="flask_app:count:")
        mc.add(key, 0)
        return f"{path}: {mc.incr(key)}\n"

    @app.get("/stream")
    def stream() -> Response:
        def body() -> Iterator[str]:
            for n in range(3):
                yield f"{n}: {memcache.client.get(GREETING_KEY)}\n"

        return Response(stream_with_context(body()), mimetype="text/plain")

    @app.get("/health")
    def health() -> str:
        return "ok"

    return app
