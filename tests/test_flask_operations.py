"""The Flask extension's operations side: config from the environment,
warnings for unknown names, early errors for bad addresses, the start-up
check and the live stats endpoint."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from mcpool import ServerUnavailable
from mcpool.flask import (
    ConfigWarning,
    MemcachePool,
    StartupCheckWarning,
    config_from_env,
)
from mcpool.testing import MemcachedServer, free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Seconds per server operation in tests that are not about timeouts.
SERVER_TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def no_mcpool_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without app config in it."""
    for name in list(os.environ):
        if name.startswith("MCPOOL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    """Apps a test sets up; their pools are closed afterwards."""
    made: list[Flask] = []
    yield made
    for app in made:
        if "mcpool" in app.extensions:
            MemcachePool.get_state(app).pool.close()


def init(apps: list[Flask], app: Flask) -> Flask:
    MemcachePool().init_app(app)
    apps.append(app)
    return app


# -- config from the environment ----------------------------------------------


def test_config_from_env_parses_values_by_the_type_each_key_takes(
    memcached: MemcachedServer, apps: list[Flask]
) -> None:
    app = Flask("env")
    loaded = config_from_env(
        app,
        {
            "MCPOOL_SERVERS": f"{memcached.address},127.0.0.1:1",
            "MCPOOL_POOL_SIZE": "3",
            "MCPOOL_POOL_TIMEOUT": "0.5",
            "MCPOOL_SERVER_TIMEOUT": "10",
            "MCPOOL_BINARY": "false",
            "MCPOOL_WSGI_MIDDLEWARE": "off",
            "MCPOOL_POOL_OPTIONS": '{"max_idle": 60}',
            "MCPOOL_POOL": "queue",
            "UNRELATED": "1",
        },
    )
    assert loaded == {
        "MCPOOL_SERVERS": f"{memcached.address},127.0.0.1:1",
        "MCPOOL_POOL_SIZE": 3,
        "MCPOOL_POOL_TIMEOUT": 0.5,
        "MCPOOL_SERVER_TIMEOUT": 10,
        "MCPOOL_BINARY": False,
        "MCPOOL_WSGI_MIDDLEWARE": "off",
        "MCPOOL_POOL_OPTIONS": {"max_idle": 60},
        "MCPOOL_POOL": "queue",
    }
    assert "UNRELATED" not in app.config
    init(apps, app)
    state = MemcachePool.get_state(app)
    assert state.servers == [memcached.address, "127.0.0.1:1"]
    assert (state.pool.max_size, state.pool.max_idle, state.pool.timeout) == (
        3,
        60,
        0.5,
    )


def test_text_keys_are_never_parsed_as_json() -> None:
    app = Flask("env")
    loaded = config_from_env(
        app,
        {
            "MCPOOL_USERNAME": "1234",
            "MCPOOL_PASSWORD": "true",
            "MCPOOL_SERVERS": '["10.0.0.1:11211", "10.0.0.2:11211"]',
            "MCPOOL_POOL_SIZE": "true",  # a bool is no size: kept, then refused
        },
    )
    assert loaded["MCPOOL_USERNAME"] == "1234"
    assert loaded["MCPOOL_PASSWORD"] == "true"
    assert loaded["MCPOOL_SERVERS"] == ["10.0.0.1:11211", "10.0.0.2:11211"]
    assert loaded["MCPOOL_POOL_SIZE"] == "true"
    with pytest.raises(ValueError, match="MCPOOL_POOL_SIZE must be a number"):
        MemcachePool(app)


def test_config_from_env_after_init_app_says_to_call_it_first(
    memcached: MemcachedServer, apps: list[Flask]
) -> None:
    app = Flask("late")
    app.config["MCPOOL_SERVERS"] = memcached.address
    init(apps, app)
    with pytest.raises(RuntimeError, match=r"config_from_env\(app\) before"):
        config_from_env(app, {})


def test_flask_prefixed_env_can_carry_the_keys_too(
    memcached: MemcachedServer, monkeypatch: pytest.MonkeyPatch, apps: list[Flask]
) -> None:
    monkeypatch.setenv("FLASK_MCPOOL_SERVERS", memcached.address)
    monkeypatch.setenv("FLASK_MCPOOL_POOL_SIZE", "2")
    app = Flask("prefixed")
    app.config.from_prefixed_env()
    init(apps, app)
    state = MemcachePool.get_state(app)
    assert state.servers == [memcached.address] and state.pool.max_size == 2


# The app factory of docs/operations.rst, as a user would write it.
USER_APP = """\
from flask import Flask
from mcpool.flask import MemcachePool, config_from_env

memcache = MemcachePool()

def create_app(test_config=None):
    app = Flask(__name__)
    app.config["MCPOOL_SERVERS"] = "127.0.0.1:11211"  # the code's default
    config_from_env(app)               # the environment overrides it
    app.config.update(test_config or {})  # and a test's config both
    memcache.init_app(app)
    return app
"""


def flask_command(
    tmp_path: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "userapp.py").write_text(USER_APP)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCPOOL_")}
    return subprocess.run(
        [str(BIN / "flask"), "--app", "userapp", *args],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_ping_uses_the_servers_from_the_environment(
    memcached: MemcachedServer, tmp_path: Path
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    result = flask_command(
        tmp_path,
        {"MCPOOL_SERVERS": f"{memcached.address},{dead}"},
        "mcpool",
        "ping",
    )
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        [memcached.address, "ok"],
        [dead, "FAILED"],
    ], result.stdout + result.stderr
    assert result.returncode == 1


# -- unknown names -------------------------------------------------------------


def test_an_unknown_config_key_warns_with_the_nearest_name(
    memcached: MemcachedServer, apps: list[Flask]
) -> None:
    app = Flask("typo")
    app.config.update(MCPOOL_SERVERS=memcached.address, MCPOOL_POOL_SIZ=4)
    with pytest.warns(ConfigWarning, match=r"MCPOOL_POOL_SIZ.*MCPOOL_POOL_SIZE\?"):
        init(apps, app)


def test_an_unknown_environment_variable_warns_with_the_nearest_name() -> None:
    with pytest.warns(
        ConfigWarning,
        match=r"environment variable MCPOOL_SERVER: .*did you mean MCPOOL_SERVERS\?",
    ):
        loaded = config_from_env(Flask("typo"), {"MCPOOL_SERVER": "10.0.0.1:11211"})
    assert loaded == {}


def test_the_environment_is_not_read_without_config_from_env_and_says_so(
    memcached: MemcachedServer, monkeypatch: pytest.MonkeyPatch, apps: list[Flask]
) -> None:
    monkeypatch.setenv("MCPOOL_POOL_SIZE", "3")
    monkeypatch.setenv("MCPOOL_SERVER", "10.0.0.1:11211")
    app = Flask("unread")
    app.config["MCPOOL_SERVERS"] = memcached.address
    with pytest.warns(ConfigWarning) as caught:
        init(apps, app)
    messages = sorted(str(warning.message) for warning in caught)
    assert len(messages) == 2, messages
    assert "did you mean MCPOOL_SERVERS?" in messages[1]
    assert "MCPOOL_POOL_SIZE='3'" in messages[0]
    assert "config_from_env(app)" in messages[0]
    assert MemcachePool.get_state(app).pool.max_size == 10


def test_no_warning_for_the_environment_the_app_loaded_or_the_build_variables(
    memcached: MemcachedServer, monkeypatch: pytest.MonkeyPatch, apps: list[Flask]
) -> None:
    monkeypatch.setenv("MCPOOL_SERVERS", memcached.address)
    monkeypatch.setenv("MCPOOL_PYLIBMC", "pylibmc2")
    monkeypatch.setenv("MCPOOL_CONSTRAINTS", ".ci/floors.txt")
    app = Flask("loaded")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config_from_env(app)
        app.config["MCPOOL_POOL_SIZE"] = 2  # the app's own word, after the env
        init(apps, app)
    assert MemcachePool.get_state(app).servers == [memcached.address]


# -- server addresses ------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["localhost:abc", "127.0.0.1:99999", "127.0.0.1:", "[::1", ":11211"],
)
def test_an_unparsable_server_address_is_refused_at_init_app_by_name(
    memcached: MemcachedServer, address: str
) -> None:
    app = Flask("bad address")
    app.config["MCPOOL_SERVERS"] = f"{memcached.address},{address}"
    with pytest.raises(ValueError) as raised:
        MemcachePool(app)
    message = str(raised.value)
    assert "MCPOOL_SERVERS" in message and repr(address) in message, message
    assert "invalid literal" not in message
    assert "mcpool" not in app.extensions


@pytest.mark.parametrize(
    "address", ["10.0.0.1:11211", "memcached", "[::1]:11211", "/run/memcached.sock"]
)
def test_every_documented_address_form_is_accepted(
    address: str, apps: list[Flask]
) -> None:
    app = Flask("good address")
    app.config["MCPOOL_SERVERS"] = address
    init(apps, app)
    assert MemcachePool.get_state(app).servers == [address]


# -- the start-up check ----------------------------------------------------------


def checked_app(servers: list[str], mode: str) -> Flask:
    app = Flask("checked")
    app.config.update(
        MCPOOL_SERVERS=servers,
        MCPOOL_CHECK_ON_START=mode,
        MCPOOL_CHECK_TIMEOUT=SERVER_TIMEOUT,
        MCPOOL_SERVER_TIMEOUT=SERVER_TIMEOUT,
    )
    return app


def test_start_up_check_warns_and_logs_when_no_server_answers(
    caplog: pytest.LogCaptureFixture, apps: list[Flask]
) -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    app = checked_app(dead, "warn")
    with caplog.at_level(logging.WARNING, logger="mcpool.flask"):
        with pytest.warns(StartupCheckWarning, match="no memcached server answered"):
            init(apps, app)
    assert "mcpool" in app.extensions  # set up all the same
    logged = [r.getMessage() for r in caplog.records if r.name == "mcpool.flask"]
    assert len(logged) == 2, logged
    for address, line in zip(dead, logged, strict=True):
        assert address in line and "did not answer" in line


def test_start_up_check_fails_when_no_server_answers(apps: list[Flask]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    app = checked_app([dead], "fail")
    with pytest.raises(ServerUnavailable, match=rf"{dead}.*MCPOOL_CHECK_ON_START"):
        init(apps, app)
    assert "mcpool" not in app.extensions


def test_start_up_check_passes_when_a_server_answers(
    memcached: MemcachedServer, caplog: pytest.LogCaptureFixture, apps: list[Flask]
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    app = checked_app([memcached.address, dead], "fail")
    with caplog.at_level(logging.WARNING, logger="mcpool.flask"):
        init(apps, app)
    logged = [r.getMessage() for r in caplog.records if r.name == "mcpool.flask"]
    assert len(logged) == 1 and dead in logged[0], logged
    assert MemcachePool.get_state(app).pool.stats().created == 0


def test_start_up_check_is_off_by_default_and_checks_its_mode(
    apps: list[Flask],
) -> None:
    app = Flask("unchecked")
    app.config["MCPOOL_SERVERS"] = f"127.0.0.1:{free_port()}"
    init(apps, app)  # no server, no word: the check is opt-in
    app = Flask("bad mode")
    app.config["MCPOOL_CHECK_ON_START"] = "loud"
    with pytest.raises(ValueError, match="MCPOOL_CHECK_ON_START must be one of"):
        init(apps, app)
