"""mcpool.cachelib.MemcachedCache: keys, counters, failures, and Flask-Caching."""

from __future__ import annotations

import re
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pylibmc
import pytest
from flask import Flask
from flask_caching import Cache

from mcpool import Client, ClientPool, ThreadMappedPool, safe_key
from mcpool.cachelib import MemcachedCache
from mcpool.flask import CONFIG_DEFAULTS, MemcachePool
from mcpool.testing import MemcachedServer

# Generous: a loaded machine is slow, and timing out is not what is tested.
SLOW_OK = {"pool_timeout": 60.0, "server_timeout": 10.0}


@pytest.fixture
def cache(memcached: MemcachedServer) -> Iterator[MemcachedCache]:
    cache = MemcachedCache([memcached.address], key_prefix="t:", **SLOW_OK)
    yield cache
    cache.pool.close()


def raw(server: MemcachedServer) -> pylibmc.Client:
    return pylibmc.Client([server.address])


# -- keys ----------------------------------------------------------------


def test_a_valid_key_is_stored_under_prefix_and_key(
    cache: MemcachedCache, memcached: MemcachedServer
) -> None:
    assert cache.set("user:42", {"name": "ann"})
    assert raw(memcached).get("t:user:42") == {"name": "ann"}


@pytest.mark.parametrize(
    "key", ["a b", "x" * 300, "caf\u00e9", "line\r\nset evil 0 0 1", "x~y"]
)
def test_any_other_text_works_as_a_key(
    cache: MemcachedCache, memcached: MemcachedServer, key: str
) -> None:
    assert cache.set(key, "v")
    assert cache.get(key) == "v"
    assert cache.has(key)
    assert cache.get_dict(key) == {key: "v"}
    assert raw(memcached).get(safe_key(key, prefix="t:")) == "v"
    assert cache.delete(key)
    assert cache.get(key) is None


def test_no_key_lands_on_the_mapped_key_of_another(cache: MemcachedCache) -> None:
    assert cache.set("a b", "kept")
    mapped = safe_key("a b")  # what "a b" is stored under, after the prefix
    assert cache.set(mapped, "chosen by an attacker")
    assert cache.get("a b") == "kept"
    assert cache.get(mapped) == "chosen by an attacker"


def test_a_bad_prefix_is_refused_at_once(memcached: MemcachedServer) -> None:
    with pytest.raises(ValueError, match="key_prefix 'my app:'"):
        MemcachedCache([memcached.address], key_prefix="my app:")


# -- timeouts --------------------------------------------------------------


def test_timeouts_follow_cachelib(memcached: MemcachedServer) -> None:
    cache = MemcachedCache([memcached.address], default_timeout=0)
    assert cache._normalize_timeout(None) == 0  # forever
    assert cache._normalize_timeout(60) == 60
    month_and_a_day = 31 * 24 * 3600
    # Past 30 days memcached wants the Unix time: sent as such.
    assert cache._normalize_timeout(month_and_a_day) > 1_000_000_000
    assert cache.set("long", "v", timeout=month_and_a_day)
    assert cache.get("long") == "v"
    assert cache.set("gone", "v", timeout=-1)
    assert cache.get("gone") is None


# -- counters --------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_counters_are_atomic_both_ways_and_below_zero(
    memcached: MemcachedServer, binary: bool
) -> None:
    cache = MemcachedCache(
        [memcached.address], key_prefix=f"count-{binary}:", binary=binary, **SLOW_OK
    )
    cache.delete("hits")
    cache.delete("debt")
    start = threading.Barrier(8)

    def count(_: int) -> None:
        start.wait()
        for _ in range(25):
            assert cache.inc("hits") is not None
            assert cache.dec("debt", 2) is not None

    with ThreadPoolExecutor(8) as executor:
        list(executor.map(count, range(8)))
    assert cache.get("hits") == 200
    assert cache.get("debt") == -400
    assert cache.inc("debt", 401) == 1
    assert cache.inc("hits", 2**40) == 2**40 + 200
    cache.pool.close()


def test_counters_without_compare_and_swap_still_count(
    memcached: MemcachedServer,
) -> None:
    # A pool of clients without the cas behaviour (the Flask extension's,
    # by default): dec falls back to cachelib's read and write.
    pool = ClientPool(Client([memcached.address], timeout=10.0), 2)
    cache = MemcachedCache(pool, key_prefix="nocas:")
    cache.delete("n")
    assert cache.dec("n", 3) == -3
    assert cache.inc("n", 5) == 2
    assert cache.dec("n", 2) == 0
    assert cache.get("n") == 0
    pool.close()


def test_a_counter_deleted_between_read_and_swap_starts_again(
    cache: MemcachedCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.set("debt", -10)
    gets = Client.gets
    deleted: list[bool] = []

    def gets_then_another_client_deletes(mc: Client, key: Any) -> Any:
        found = gets(mc, key)
        if not deleted:
            deleted.append(cache.delete("debt"))
        return found

    monkeypatch.setattr(Client, "gets", gets_then_another_client_deletes)
    # The swap finds no key (memcached's NOT_FOUND): the decrement starts
    # again from a missing counter, as if it came after the delete.
    assert cache.dec("debt", 2) == -2
    assert deleted == [True]
    assert cache.get("debt") == -2


def test_inc_of_a_value_that_is_no_integer_says_so(cache: MemcachedCache) -> None:
    cache.set("name", "ann")
    with pytest.raises(TypeError, match="holds a str, not an integer"):
        cache.inc("name")


# -- the pool --------------------------------------------------------------


def test_each_call_holds_a_client_only_for_that_call(
    fresh_memcached: MemcachedServer,
) -> None:
    cache = MemcachedCache([fresh_memcached.address], pool_size=1, **SLOW_OK)
    for n in range(20):
        cache.set(f"k{n}", n)
        assert cache.get_many(f"k{n}", "missing") == [n, None]
        assert cache.pool.stats().in_use == 0
    assert cache.pool.stats().created == 1


@pytest.mark.parametrize("kind", [ClientPool, ThreadMappedPool])
def test_a_given_pool_is_used_as_it_is(memcached: MemcachedServer, kind: Any) -> None:
    pool = kind(Client([memcached.address]), 2)
    cache = MemcachedCache(pool, key_prefix="given:")
    assert cache.pool is pool
    assert cache.set("k", 1) and cache.get("k") == 1
    pool.close()


def test_the_client_attribute_has_only_real_methods(cache: MemcachedCache) -> None:
    # cachelib keeps its client in _client, and code reaches for it.
    client = cache._client
    assert not hasattr(client, "no_such_method")
    assert client.set("t:direct", "v")
    assert cache.get("direct") == "v"
    with client.reserve() as mc:
        assert mc.get("t:direct") == "v"


# -- a server that is down -------------------------------------------------


def test_a_down_server_is_a_miss_for_reads_and_false_for_writes(
    fresh_memcached: MemcachedServer,
) -> None:
    cache = MemcachedCache(
        [fresh_memcached.address], ignore_delete_many_errors=True, **SLOW_OK
    )
    assert cache.set("k", 1)
    fresh_memcached.stop()
    assert cache.get("k") is None
    assert cache.get_many("k", "j") == [None, None]
    assert cache.has("k") is False
    assert cache.set("k", 2) is False
    assert cache.add("new", 2) is False
    assert cache.set_many({"a": 1, "b": 2}) == []
    assert cache.delete("k") is False
    assert cache.delete_many("k", "j") == []
    assert cache.inc("n") is None
    assert cache.dec("n") is None
    assert cache.clear() is False
    assert cache.pool.stats().in_use == 0


def test_delete_many_on_a_down_server_raises_unless_errors_are_ignored(
    fresh_memcached: MemcachedServer,
) -> None:
    cache = MemcachedCache(
        [fresh_memcached.address], ignore_delete_many_errors=False, **SLOW_OK
    )
    fresh_memcached.stop()
    with pytest.raises(RuntimeError, match=r"Failed to delete keys: \['k'\]"):
        cache.delete_many("k")


# -- Flask-Caching ---------------------------------------------------------


def flask_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(CACHE_TYPE="mcpool.cachelib.MemcachedCache", **config)
    return app


def test_flask_caching_builds_the_cache_from_its_keys(
    memcached: MemcachedServer,
) -> None:
    app = flask_app(
        CACHE_MEMCACHED_SERVERS=[memcached.address],
        CACHE_KEY_PREFIX="fc:",
        CACHE_DEFAULT_TIMEOUT=60,
        CACHE_OPTIONS={"pool_size": 3, "pool_timeout": 5.0},
    )
    cache = Cache(app)
    backend = app.extensions["cache"][cache]
    assert isinstance(backend, MemcachedCache)
    assert backend.key_prefix == "fc:" and backend.default_timeout == 60
    assert backend.pool.max_size == 3 and backend.pool.timeout == 5.0
    with app.app_context():
        assert cache.set("k", "v")
    assert raw(memcached).get("fc:k") == "v"


def test_flask_caching_uses_the_extensions_pool(memcached: MemcachedServer) -> None:
    app = flask_app(MCPOOL_SERVERS=[memcached.address])
    memcache = MemcachePool(app)
    cache = Cache(app)
    assert app.extensions["cache"][cache].pool is memcache.get_state(app).pool


def test_other_servers_than_the_extensions_are_refused(
    memcached: MemcachedServer,
) -> None:
    app = flask_app(
        MCPOOL_SERVERS=[memcached.address], CACHE_MEMCACHED_SERVERS=["10.0.0.9:11211"]
    )
    MemcachePool(app)
    with pytest.raises(ValueError, match="remove CACHE_MEMCACHED_SERVERS"):
        Cache(app)


def test_the_extension_after_the_cache_is_refused(memcached: MemcachedServer) -> None:
    app = flask_app(CACHE_MEMCACHED_SERVERS=[memcached.address])
    Cache(app)
    with pytest.raises(RuntimeError, match="before Cache"):
        MemcachePool(app)


def memoizing_app(
    config: dict[str, Any], with_extension: bool = False
) -> tuple[Flask, Cache]:
    app = flask_app(**config)
    if with_extension:
        MemcachePool(app)
    cache = Cache(app)

    @cache.memoize(timeout=60)
    def square(n: int) -> int:
        return n * n

    @app.get("/square/<int:n>")
    def show_square(n: int) -> str:
        return str(square(n))

    @app.get("/page")
    @cache.cached(timeout=60)
    def page() -> str:
        return "page"

    @app.get("/write/<int:n>")
    def write(n: int) -> str:
        return f"{cache.set(f'w{n}', n)} {cache.get(f'w{n}')}"

    return app, cache


@pytest.mark.parametrize("through", ["cache keys", "extension"])
def test_sixteen_threads_memoize_right_values_on_a_bounded_pool(
    fresh_memcached: MemcachedServer, through: str
) -> None:
    bound = 4
    if through == "extension":
        config = {
            "MCPOOL_SERVERS": [fresh_memcached.address],
            "MCPOOL_POOL_SIZE": bound,
            "MCPOOL_POOL_TIMEOUT": 60.0,
            "MCPOOL_SERVER_TIMEOUT": 10.0,
        }
    else:
        config = {
            "CACHE_MEMCACHED_SERVERS": [fresh_memcached.address],
            "CACHE_OPTIONS": {"pool_size": bound, **SLOW_OK},
        }
    before = fresh_memcached.stats()
    app, cache = memoizing_app(config, with_extension=through == "extension")
    numbers = [n % 25 for n in range(400)]

    def fetch(n: int) -> tuple[int, int, str]:
        response = app.test_client().get(f"/square/{n}")
        return n, response.status_code, response.get_data(as_text=True)

    with ThreadPoolExecutor(16) as executor:
        results = list(executor.map(fetch, numbers))

    wrong = [r for r in results if r[1:] != (200, str(r[0] * r[0]))]
    assert wrong == []
    after = fresh_memcached.stats()
    # Each stats() opens one connection of its own.
    opened = int(after["total_connections"]) - int(before["total_connections"]) - 1
    assert 1 <= opened <= bound
    assert int(after["curr_connections"]) - int(before["curr_connections"]) <= bound
    assert app.extensions["cache"][cache].pool.stats().in_use == 0


@pytest.mark.parametrize("ignore_errors", [False, True])
def test_views_answer_while_the_server_is_down(
    fresh_memcached: MemcachedServer, ignore_errors: bool
) -> None:
    app, cache = memoizing_app(
        {
            "CACHE_MEMCACHED_SERVERS": [fresh_memcached.address],
            "CACHE_IGNORE_ERRORS": ignore_errors,
            "CACHE_OPTIONS": SLOW_OK,
        }
    )
    app.debug = True  # Flask-Caching re-raises backend errors in debug mode
    client = app.test_client()
    assert client.get("/write/1").get_data(as_text=True) == "True 1"
    fresh_memcached.stop()
    for path, body in [
        ("/square/7", "49"),
        ("/page", "page"),
        ("/write/2", "False None"),
    ]:
        response = client.get(path)
        assert (response.status_code, response.get_data(as_text=True)) == (200, body)
    with app.app_context():
        if ignore_errors:
            assert cache.delete_many("a", "b") == []
        else:
            with pytest.raises(RuntimeError, match="Failed to delete keys"):
                cache.delete_many("a", "b")


# -- docs/flask-caching.rst ------------------------------------------------

DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "flask-caching.rst"
CODE_BLOCK = re.compile(r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)", re.M)


def docs_snippets() -> list[str]:
    return [
        textwrap.dedent(block) for block in CODE_BLOCK.findall(DOCS_PAGE.read_text())
    ]


@pytest.fixture(autouse=True)
def patient_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generous default timeouts, for the snippets that use the defaults: a
    healthy server on a loaded machine may take longer than 0.25 s."""
    monkeypatch.setitem(CONFIG_DEFAULTS, "MCPOOL_SERVER_TIMEOUT", 10.0)
    defaults = MemcachedCache.__init__.__kwdefaults__
    assert defaults is not None
    monkeypatch.setitem(defaults, "server_timeout", 10.0)
    monkeypatch.setitem(defaults, "pool_timeout", 60.0)


def run_snippet(code: str, server: MemcachedServer) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "docs_snippet"}
    exec(code.replace("127.0.0.1:11211", server.address), namespace)
    return namespace


def test_docs_snippets_are_the_ones_tested() -> None:
    assert len(docs_snippets()) == 3


def test_docs_flask_caching_snippet(fresh_memcached: MemcachedServer) -> None:
    snippet = run_snippet(docs_snippets()[0], fresh_memcached)
    app, cache = snippet["app"], snippet["cache"]
    response = app.test_client().get("/square/7")
    assert (response.status_code, response.get_data(as_text=True)) == (200, "49")
    backend = app.extensions["cache"][cache]
    assert backend.key_prefix == "myapp:" and backend.pool.max_size == 8


def test_docs_extension_snippet(fresh_memcached: MemcachedServer) -> None:
    snippet = run_snippet(docs_snippets()[1], fresh_memcached)
    app = snippet["create_app"]()
    cache, memcache = snippet["cache"], snippet["memcache"]
    assert app.extensions["cache"][cache].pool is memcache.get_state(app).pool
    with app.app_context():
        assert cache.set("k", "v")
        assert memcache.client.get("myapp:k") == "v"


def test_docs_without_flask_snippet(fresh_memcached: MemcachedServer) -> None:
    run_snippet(docs_snippets()[2], fresh_memcached)


def test_docs_values_written_before_the_switch_are_read_and_back(
    fresh_memcached: MemcachedServer,
) -> None:
    def app_with(cache_type: str) -> tuple[Flask, Cache]:
        app = Flask(__name__)
        app.config.update(
            CACHE_TYPE=cache_type,
            CACHE_MEMCACHED_SERVERS=[fresh_memcached.address],
            CACHE_KEY_PREFIX="myapp:",
        )
        return app, Cache(app)

    old_app, old = app_with("MemcachedCache")
    new_app, new = app_with("mcpool.cachelib.MemcachedCache")
    with old_app.app_context():
        assert old.set("user:42", {"name": "ann"}, timeout=300)
    with new_app.app_context():
        assert new.get("user:42") == {"name": "ann"}
        assert new.set("user:43", ["bob"], timeout=300)
    with old_app.app_context():
        assert old.get("user:43") == ["bob"]
