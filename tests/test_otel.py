"""mcpool.otel: the semantic-convention pool metrics, read by the SDK."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pylibmc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from test_telemetry import FakeClock, wait_until

from mcpool import Client, ClientPool, Pool, PoolTimeout
from mcpool.histogram import BUCKETS
from mcpool.otel import instrument
from mcpool.testing import MemcachedServer, free_port

POOL = "db.client.connection.pool.name"


def read(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Metric name -> the metric, from one collection."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def points(metric: Any) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {
        tuple(sorted(point.attributes.items())): point
        for point in metric.data.data_points
    }


def test_every_pool_metric_has_its_convention_name_unit_and_value(
    memcached: MemcachedServer,
) -> None:
    clock = FakeClock()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    pool = ClientPool(
        pylibmc.Client([memcached.address]), 2, clock=clock, max_spare=2, timeout=30
    )
    instrument(pool, meter_provider=provider)

    first = pool.checkout()  # made: a create and a wait of 0 s
    second = pool.checkout()
    with pytest.raises(PoolTimeout):  # a timeout
        pool.checkout(block=False)
    clock.advance(0.2)
    second.release(discard=True)  # a discard, after a use of 0.2 s
    with pool.reserve():  # a new client is made
        pass
    got = threading.Event()

    def waiter() -> None:
        lease = pool.checkout()
        got.set()
        clock.advance(1.5)  # then held for 1.5 s
        lease.release()

    with pool.reserve():  # both out: the waiter waits
        thread = threading.Thread(target=waiter)
        thread.start()
        wait_until(lambda: pool.stats().waiting == 1, "the waiter to queue")
        clock.advance(0.04)  # a wait of known length
        first.release()
        thread.join(10)
    assert got.is_set()

    metrics = read(reader)
    name = {POOL: memcached.address}
    expected_units = {
        "db.client.connection.count": "{connection}",
        "db.client.connection.idle.max": "{connection}",
        "db.client.connection.idle.min": "{connection}",
        "db.client.connection.max": "{connection}",
        "db.client.connection.pending_requests": "{request}",
        "db.client.connection.timeouts": "{timeout}",
        "db.client.connection.create_time": "s",
        "db.client.connection.wait_time": "s",
        "db.client.connection.use_time": "s",
    }
    assert {key: metrics[key].unit for key in expected_units} == expected_units

    count = points(metrics["db.client.connection.count"])
    state = "db.client.connection.state"
    idle_key = tuple(sorted({**name, state: "idle"}.items()))
    used_key = tuple(sorted({**name, state: "used"}.items()))
    assert count[idle_key].value == 2 and count[used_key].value == 0
    assert not metrics["db.client.connection.count"].data.is_monotonic

    def value(metric: str) -> Any:
        (point,) = metrics[metric].data.data_points
        assert dict(point.attributes) == name
        return point.value

    assert value("db.client.connection.max") == 2
    assert value("db.client.connection.idle.max") == 2
    assert value("db.client.connection.idle.min") == 0
    assert value("db.client.connection.pending_requests") == 0
    assert value("db.client.connection.timeouts") == 1
    assert metrics["db.client.connection.timeouts"].data.is_monotonic

    def histogram(metric: str) -> Any:
        (point,) = metrics[metric].data.data_points
        assert dict(point.attributes) == name
        assert list(point.explicit_bounds) == list(BUCKETS)
        return point

    assert histogram("db.client.connection.create_time").count == 3
    wait = histogram("db.client.connection.wait_time")
    assert wait.count == 5  # first, second, the reserve, the outer, the waiter
    assert wait.sum == pytest.approx(0.04)
    assert wait.bucket_counts[BUCKETS.index(0.05)] == 1
    use = histogram("db.client.connection.use_time")
    assert use.count == 5
    # second 0.2 s, the reserve 0 s, first 0.24 s, the waiter 1.5 s, and the
    # outer reserve 1.54 s (it held its client while the waiter's clock ran)
    assert use.sum == pytest.approx(0.2 + 0.24 + 1.5 + 1.54)
    assert use.bucket_counts[BUCKETS.index(2.5)] == 2


def test_pools_on_one_provider_report_apart_and_uninstrument() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    sessions: Pool[list[int]] = Pool(list, 3, name="sessions")
    pages: Pool[list[int]] = Pool(list, 5, name="pages")
    instrument(sessions, meter_provider=provider)
    handle = instrument(pages, meter_provider=provider)
    with sessions.reserve(), pages.reserve(), pages.reserve():
        pass
    maxima = {
        dict(point.attributes)[POOL]: point.value
        for point in read(reader)["db.client.connection.max"].data.data_points
    }
    assert maxima == {"sessions": 3, "pages": 5}
    handle.uninstrument()
    with pages.reserve():
        pass
    maxima = {
        dict(point.attributes)[POOL]: point.value
        for point in read(reader)["db.client.connection.max"].data.data_points
    }
    assert maxima == {"sessions": 3}


def test_each_servers_state_and_failures_are_reported(
    memcached: MemcachedServer,
) -> None:
    dead_port = free_port()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    pool = ClientPool(
        Client([memcached.address, f"127.0.0.1:{dead_port}"], timeout=5),
        2,
        name="cache",
    )
    instrument(pool, meter_provider=provider)
    with pool.reserve() as mc:
        for n in range(20):  # some keys land on the dead server
            mc.get(f"otel:{n}")
    wait_until(lambda: not pool.stats().servers[1].available, "the dead server")
    metrics = read(reader)

    def by_server(metric: str) -> dict[tuple[str, int], Any]:
        found = {}
        for point in metrics[metric].data.data_points:
            attributes = dict(point.attributes)
            assert attributes[POOL] == "cache"
            key = (attributes["server.address"], attributes["server.port"])
            found[key] = point.value
        return found

    live = (memcached.host, memcached.port)
    dead = ("127.0.0.1", dead_port)
    assert by_server("mcpool.server.available") == {live: 1, dead: 0}
    assert by_server("mcpool.server.ejections") == {live: 0, dead: 1}
    unavailable = by_server("mcpool.server.unavailable")
    assert unavailable[live] == 0 and unavailable[dead] >= 1
    assert metrics["mcpool.server.unavailable"].unit == "{request}"
    assert metrics["mcpool.server.ejections"].data.is_monotonic


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("otel", "opentelemetry", "otel"),
        ("prometheus", "prometheus_client", "prometheus"),
    ],
)
def test_importing_without_the_library_names_the_extra(
    module: str, framework: str, extra: str
) -> None:
    code = (
        f"import sys; sys.modules[{framework!r}] = None\n"
        f"try:\n    import mcpool.{module}\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert f"pip install 'mcpool[{extra}]'" in result.stdout
