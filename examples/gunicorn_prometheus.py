"""gunicorn settings for Prometheus metrics in multiprocess mode.

``gunicorn -c python:examples.gunicorn_prometheus ...``: when a worker exits, its
gauge files are removed, so that the pool gauges (summed over the live
workers) stop counting it. The counters and histograms it wrote stay in the
sums, as Prometheus expects of counters.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
