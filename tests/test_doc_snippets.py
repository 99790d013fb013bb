"""The code in README.md, on the docs' front page and in the Flask guide's
streaming section does what the text around it says, run as written (the
server addresses pointed at a test server)."""

from __future__ import annotations

import contextlib
import io
import re
import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, stream_with_context
from werkzeug.test import Client as WSGIClient

import mcpool
from mcpool.flask import MemcachePool
from mcpool.testing import MemcachedServer

ROOT = Path(__file__).resolve().parent.parent


def markdown_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), re.M | re.S)


def rst_blocks(path: Path) -> list[str]:
    blocks = re.findall(
        r"^( *)\.\. code-block:: python\n\n((?:\1 +.*\n|\n)+)", path.read_text(), re.M
    )
    return [textwrap.dedent(body) for _, body in blocks]


def the_block(blocks: list[str], containing: str) -> str:
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"expected one block with {containing!r}, got {found}"
    return found[0]


def pointed_at(code: str, server: MemcachedServer) -> str:
    return re.sub(r"127\.0\.0\.1:11211|10\.0\.0\.\d+", server.address, code)


def run(
    code: str, namespace: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    namespace = {"__name__": "snippet"} if namespace is None else namespace
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<snippet>", "exec"), namespace)
    return namespace, out.getvalue()


README = markdown_blocks(ROOT / "README.md")


@pytest.mark.parametrize(
    "source", [README, rst_blocks(ROOT / "docs" / "index.rst")], ids=["readme", "index"]
)
def test_the_first_snippet_is_the_safe_client_in_a_pool(
    source: list[str], fresh_memcached: MemcachedServer
) -> None:
    code = source[0]
    assert "mcpool.Client(" in code and "import pylibmc" not in code
    namespace, out = run(pointed_at(code, fresh_memcached))
    pool = namespace["pool"]
    assert isinstance(pool.master, mcpool.Client)
    assert (pool.max_size, pool.timeout) == (8, 2.0)  # as the comments say
    with pool.reserve() as mc:
        assert mc.get("greeting") == "hello"
    if source is README:
        # The printed stats start as the comment under print() shows.
        shown = re.search(r"# (PoolStats\(.*), \.\.\.\)", code)
        assert shown is not None and out.startswith(shown.group(1))


def test_readme_middleware_line(memcached: MemcachedServer) -> None:
    code = the_block(README, "PoolMiddleware(app, pool)")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        mc = environ["mcpool.client"]
        mc.set("readme:middleware", "seen")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [mc.get("readme:middleware").encode()]

    pool = mcpool.ClientPool(mcpool.Client([memcached.address]), 2)
    namespace, _ = run(code, {"mcpool": mcpool, "app": app, "pool": pool})
    response = WSGIClient(namespace["app"]).get("/")
    assert response.get_data() == b"seen"
    response.close()
    assert pool.stats().in_use == 0  # released when the response closed


def test_readme_flask_app(memcached: MemcachedServer) -> None:
    code = the_block(README, "memcache = MemcachePool()")
    namespace, _ = run(pointed_at(code, memcached))
    app = namespace["create_app"]()
    assert app.config["MCPOOL_SERVERS"] == memcached.address
    with app.app_context():
        namespace["memcache"].client.delete("greeting")
    assert app.test_client().get("/").get_data() == b"hello"


def test_readme_safe_client(memcached: MemcachedServer) -> None:
    code = the_block(README, 'mc.get("user 42")')
    make, bad_key, request_key = pointed_at(code, memcached).splitlines()
    namespace, _ = run(make, {"mcpool": mcpool})
    assert namespace["mc"].addresses == [memcached.address] * 3
    with pytest.raises(mcpool.InvalidKey, match="space"):
        run(bad_key, namespace)

    class Request:
        path = "/search?q=two words\r\nflush_all"

    namespace["request"] = Request
    run(request_key, namespace)  # a valid key: a miss, no error


def test_readme_pool_of_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = the_block(README, "sqlite3.connect")
    monkeypatch.chdir(tmp_path)
    with contextlib.closing(sqlite3.connect("app.db")) as setup:
        setup.execute("create table visits (id integer primary key)")
    namespace, _ = run(code)
    namespace["pool"].close()
    with contextlib.closing(sqlite3.connect("app.db")) as check:
        assert check.execute("select count(*) from visits").fetchone() == (1,)


def test_flask_guide_streaming_pattern(memcached: MemcachedServer) -> None:
    code = the_block(rst_blocks(ROOT / "docs" / "flask.rst"), "stream_with_context(")
    app = Flask(__name__)
    app.config["MCPOOL_SERVERS"] = memcached.address
    memcache = MemcachePool(app)
    keys = ["guide:a", "guide:b"]
    with app.app_context():
        memcache.client.set_multi({"guide:a": "1", "guide:b": "2"})
    run(
        code,
        {
            "app": app,
            "memcache": memcache,
            "keys": keys,
            "Response": Response,
            "Iterator": Iterator,
            "stream_with_context": stream_with_context,
        },
    )
    response = app.test_client().get("/report")
    assert response.get_data() == b"guide:a: 1\nguide:b: 2\n"
    assert MemcachePool.get_state(app).pool.stats().in_use == 0
