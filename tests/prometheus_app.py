"""The example Flask app with a Prometheus scrape endpoint, as
``docs/telemetry.rst`` sets it up for servers that fork workers.

Each worker exports its own pool (``MCPOOL_METRICS=prometheus`` in the
environment); the worker that answers ``GET /metrics`` adds up the files
that every worker wrote in ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import os

from flask import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from examples.flask_app import create_app

application = app = create_app()


@app.get("/metrics")
def metrics() -> Response:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        # A registry per scrape, filled from every process's files.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
