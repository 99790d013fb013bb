"""mcpool.prometheus: the pool metrics in one process, and summed over
gunicorn's workers in multiprocess mode."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import pylibmc
import pytest
from flask import Flask
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_deployment import REPO, Deployment, get, running, tail, tool
from test_telemetry import FakeClock, wait_until

from mcpool import Client, ClientPool, Pool, PoolTimeout
from mcpool.flask import MemcachePool
from mcpool.prometheus import instrument
from mcpool.testing import MemcachedServer, free_port

LABEL = "db_client_connection_pool_name"


def test_the_pool_metrics_in_one_process(memcached: MemcachedServer) -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    pool = ClientPool(pylibmc.Client([memcached.address]), 2, clock=clock, timeout=30)
    instrument(pool, registry=registry)
    name = {LABEL: memcached.address}

    def value(metric: str, **labels: str) -> float | None:
        return registry.get_sample_value(metric, {**name, **labels})

    assert value("db_client_connection_max") == 2
    assert value("db_client_connection_idle_max") == 2
    assert value("db_client_connection_idle_min") == 0
    first = pool.checkout()
    assert value("db_client_connection_count", db_client_connection_state="used") == 1
    second = pool.checkout()
    with pytest.raises(PoolTimeout):
        pool.checkout(block=False)
    assert value("db_client_connection_timeouts_total") == 1

    got = threading.Event()

    def waiter() -> None:
        with pool.reserve():
            got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(
        lambda: value("db_client_connection_pending_requests") == 1,
        "the waiter to show as pending",
    )
    clock.advance(0.3)
    first.release()
    thread.join(10)
    assert got.is_set()
    second.release(discard=True)
    assert value("db_client_connection_pending_requests") == 0
    assert value("db_client_connection_count", db_client_connection_state="idle") == 1
    assert value("db_client_connection_count", db_client_connection_state="used") == 0
    assert value("db_client_connection_wait_time_seconds_count") == 3
    assert value("db_client_connection_wait_time_seconds_sum") == pytest.approx(0.3)
    assert value("db_client_connection_wait_time_seconds_bucket", le="0.25") == 2
    assert value("db_client_connection_wait_time_seconds_bucket", le="0.5") == 3
    assert value("db_client_connection_use_time_seconds_count") == 3
    assert value("db_client_connection_create_time_seconds_count") == 2

    text = generate_latest(registry).decode()
    for metric, kind in [
        ("db_client_connection_count", "gauge"),
        ("db_client_connection_max", "gauge"),
        ("db_client_connection_pending_requests", "gauge"),
        ("db_client_connection_timeouts_total", "counter"),
        ("db_client_connection_wait_time_seconds", "histogram"),
        ("db_client_connection_use_time_seconds", "histogram"),
        ("db_client_connection_create_time_seconds", "histogram"),
    ]:
        assert f"# TYPE {metric} {kind}\n" in text
        assert f"# HELP {metric} " in text


def test_pools_of_one_process_are_apart_by_name() -> None:
    registry = CollectorRegistry()
    instrument(Pool(list, 3, name="sessions"), registry=registry)
    instrument(Pool(list, 5, name="pages"), registry=registry)
    assert registry.get_sample_value("db_client_connection_max", {LABEL: "pages"}) == 5
    assert (
        registry.get_sample_value("db_client_connection_max", {LABEL: "sessions"}) == 3
    )


def test_the_limits_follow_a_resize_from_the_next_event() -> None:
    registry = CollectorRegistry()
    pool = Pool(list, 3, name="resized")
    instrument(pool, registry=registry)

    def limit(metric: str) -> float | None:
        return registry.get_sample_value(metric, {LABEL: "resized"})

    pool.resize(5)
    pool.max_spare = 2
    with pool.reserve():
        pass
    assert limit("db_client_connection_max") == 5
    assert limit("db_client_connection_idle_max") == 2
    pool.resize(1)
    with pool.reserve():
        pass
    assert limit("db_client_connection_max") == 1
    pool.close()


def test_flask_turns_metrics_on_by_config(memcached: MemcachedServer) -> None:
    app = Flask(__name__)
    app.config.update(MCPOOL_SERVERS=memcached.address, MCPOOL_METRICS="statsd")
    with pytest.raises(ValueError, match="MCPOOL_METRICS must be one of 'otel'"):
        MemcachePool(app)
    app = Flask(__name__)
    name = f"flask-{uuid.uuid4().hex[:8]}"
    app.config.update(
        MCPOOL_SERVERS=memcached.address,
        MCPOOL_METRICS="prometheus",
        MCPOOL_POOL_SIZE=3,
        MCPOOL_POOL_OPTIONS={"name": name},
    )
    MemcachePool(app)
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("db_client_connection_max", {LABEL: name}) == 3


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """GET /metrics, parsed: sample name -> sorted labels -> value.

    prometheus_client's collector fails on a metrics file caught between its
    creation and its header (``struct.error``, an HTTP 500), which a worker
    writes when its pool's first values are set: a scrape that meets one is
    asked again, for up to 10 s.
    """
    deadline = time.monotonic() + 10
    while True:
        status, body = get(port, "/metrics")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200, body
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


@pytest.mark.parametrize("server", ["gunicorn", "uwsgi", "uwsgi-preload"])
def test_one_scrape_sums_every_workers_pool(
    server: str, fresh_memcached: MemcachedServer, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    if server == "gunicorn":
        command = [
            tool("gunicorn"),
            "-c",
            "python:examples.gunicorn_prometheus",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "prometheus_app:application",
        ]
        stop = Deployment("gunicorn", lambda port: command, 2, 3)
    else:
        command = [
            tool("uwsgi"),
            "--http-socket",
            f"127.0.0.1:{port}",
            "--master",
            "--processes",
            "2",
            *([] if server == "uwsgi-preload" else ["--lazy-apps"]),
            "--home",
            sys.prefix,
            "--module",
            "prometheus_app:application",
            "--need-app",
            "--disable-logging",
        ]
        stop = Deployment(
            "uwsgi", lambda port: command, 2, 3, stop_signal=signal.SIGINT
        )
    env = dict(
        os.environ,
        MCPOOL_SERVERS=fresh_memcached.address,
        MCPOOL_POOL_SIZE="3",
        MCPOOL_POOL_TIMEOUT="60",
        MCPOOL_SERVER_TIMEOUT="10",
        MCPOOL_METRICS="prometheus",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
        PYTHONUNBUFFERED="1",
    )
    env.pop("PYTEST_CURRENT_TEST", None)
    log = tmp_path / "server.log"
    key = ((LABEL, fresh_memcached.address),)
    if server == "uwsgi-preload":
        # The app, its pool and the exporter are made in the master; each
        # worker, forked from C, resets its pool (and the exporter) at its
        # first request. The master's own gauges stay in the sums (the
        # documented limitation); the counts must be right, and no worker
        # may hang in its reset.
        with running(stop, port, env, log):
            before = scrape(port)["db_client_connection_wait_time_seconds_count"]
            for _ in range(20):
                status, _body = get(port, "/")
                assert status == 200
            after = scrape(port)["db_client_connection_wait_time_seconds_count"]
        assert after[key] - before[key] == 20
        return
    with running(stop, port, env, log):
        # Each worker writes its pool's max_size when it starts: both have
        # started once the sum shows two pools' worth.
        wait_until(
            lambda: scrape(port).get("db_client_connection_max", {}).get(key) == 6,
            f"both workers' pools in the scrape:\n{tail(log)}",
            timeout=60,
        )
        before = scrape(port)["db_client_connection_wait_time_seconds_count"][key]
        for _ in range(20):
            status, _body = get(port, "/")
            assert status == 200
        samples = scrape(port)
    # Every GET / reserved one client, in whichever worker served it.
    waits = samples["db_client_connection_wait_time_seconds_count"][key]
    assert waits - before == 20
    assert samples["db_client_connection_use_time_seconds_count"][key] == waits
    assert samples["db_client_connection_max"][key] == 6
    used = samples["db_client_connection_count"][
        tuple(sorted([*key, ("db_client_connection_state", "used")]))
    ]
    idle = samples["db_client_connection_count"][
        tuple(sorted([*key, ("db_client_connection_state", "idle")]))
    ]
    assert used == 0 and 1 <= idle <= 6


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_reports_its_own_pool() -> None:
    registry = CollectorRegistry()
    pool: Pool[list[int]] = Pool(list, 2, name="forked")
    instrument(pool, registry=registry)
    with pool.reserve():
        pass  # one idle item in the parent

    def idle() -> float | None:
        return registry.get_sample_value(
            "db_client_connection_count",
            {LABEL: "forked", "db_client_connection_state": "idle"},
        )

    assert idle() == 1
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write_end, repr(idle()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        answer = reader.read()
    os.waitpid(pid, 0)
    assert answer == b"0.0", "the child's pool has none of the parent's items"


def test_each_servers_state_and_failures_are_counted(
    memcached: MemcachedServer,
) -> None:
    dead_port = free_port()
    registry = CollectorRegistry()
    pool = ClientPool(
        Client([memcached.address, f"127.0.0.1:{dead_port}"], timeout=5),
        2,
        name="servers",
    )
    exporter = instrument(pool, registry=registry)
    with pool.reserve() as mc:
        for n in range(20):  # some keys land on the dead server
            mc.get(f"prometheus:{n}")
    wait_until(lambda: not pool.stats().servers[1].available, "the dead server")
    exporter.refresh_servers()  # (the events do it at most once a second)
    live = {LABEL: "servers", "server_address": memcached.host}
    live["server_port"] = str(memcached.port)
    dead = {LABEL: "servers", "server_address": "127.0.0.1"}
    dead["server_port"] = str(dead_port)

    def value(metric: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(metric, labels)

    assert value("mcpool_server_up", live) == 1
    assert value("mcpool_server_up", dead) == 0
    assert value("mcpool_server_ejections_total", live) == 0
    assert value("mcpool_server_ejections_total", dead) == 1
    failed = value("mcpool_server_unavailable_total", dead)
    assert failed is not None and failed >= 1
    assert value("mcpool_server_unavailable_total", live) == 0
    exporter.refresh_servers()  # totals are added once, not again
    assert value("mcpool_server_unavailable_total", dead) == failed
    assert value("mcpool_server_ejections_total", dead) == 1
