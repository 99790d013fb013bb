"""SASL username/password through mcpool.Client, against ``memcached -S``.

The password database is made by the test with ``saslpasswd2`` (system
package sasl2-bin) in a temporary directory that ``SASL_CONF_PATH`` points
the server to.

What is tested depends on the build, as what mcpool guarantees does: with
libmemcached 1.1 or later logins work; with an older one (the pylibmc and
pylibmc2 wheels) they fail at random, and mcpool.Client refuses credentials
up front, every time.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pylibmc
import pytest

from mcpool import Client, ClientPool, InvalidKey, ServerUnavailable
from mcpool.client import _explain_authentication, libmemcached_version
from mcpool.testing import MemcachedServer

# Generous: a loaded machine can stall a request past the default 0.25 s.
T = 5.0
USER, PASSWORD = "alice", "correct horse"

#: Read from pylibmc here, not from the code under test.
SASL_WORKS = tuple(map(int, pylibmc.libmemcached_version.split(".")[:2])) >= (1, 1)
needs_reliable_sasl = pytest.mark.skipif(
    not SASL_WORKS,
    reason=f"libmemcached {pylibmc.libmemcached_version}: mcpool refuses SASL here",
)


@pytest.fixture(scope="module")
def sasl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemcachedServer]:
    saslpasswd2 = shutil.which("saslpasswd2") or "/usr/sbin/saslpasswd2"
    if not Path(saslpasswd2).exists():
        raise pytest.UsageError(
            "saslpasswd2 not found: install the sasl2-bin system package "
            "('./run.sh test' does)"
        )
    conf = tmp_path_factory.mktemp("sasl")
    database = conf / "sasldb2"
    subprocess.run(
        [saslpasswd2, "-a", "memcached", "-c", "-p", "-f", str(database), USER],
        input=PASSWORD.encode(),
        check=True,
    )
    (conf / "memcached.conf").write_text(f"mech_list: plain\nsasldb_path: {database}\n")
    with MemcachedServer(
        extra_args=["-S"], env={"SASL_CONF_PATH": str(conf)}
    ) as server:
        yield server


@needs_reliable_sasl
def test_credentials_authenticate_clients_clones_and_pools(
    sasl_server: MemcachedServer,
) -> None:
    master = Client([sasl_server.address], timeout=T, username=USER, password=PASSWORD)
    assert master.binary, "SASL picks the binary protocol by itself"
    assert master.set("sasl:k", "v")
    assert master.get("sasl:k") == "v"

    pool = ClientPool(master, 2)
    with pool.reserve() as first, pool.reserve() as second:
        assert type(first) is Client
        assert first.get("sasl:k") == "v"
        assert second.set_multi({"a": 1, "b": 2}, key_prefix="sasl:") == []
        with pytest.raises(InvalidKey):
            first.get("sasl k")
    with pool.reserve() as mc:
        assert mc.get_multi(["a", "b"], key_prefix="sasl:") == {"a": 1, "b": 2}
    assert pool.stats().discarded == 0


@needs_reliable_sasl
def test_wrong_password_is_an_error_not_a_miss(sasl_server: MemcachedServer) -> None:
    good = Client([sasl_server.address], timeout=T, username=USER, password=PASSWORD)
    assert good.set("sasl:secret", "kept")

    bad = Client([sasl_server.address], timeout=T, username=USER, password="wrong")
    with pytest.raises(pylibmc.Error, match="refused the SASL username") as info:
        bad.get("sasl:secret")
    assert not isinstance(info.value, ServerUnavailable)
    # The server refuses the failed client's writes too and keeps its data.
    with pytest.raises(pylibmc.Error):
        bad.set("sasl:secret", "overwritten")
    assert good.get("sasl:secret") == "kept"


@needs_reliable_sasl
def test_no_credentials_reach_no_data(sasl_server: MemcachedServer) -> None:
    good = Client([sasl_server.address], timeout=T, username=USER, password=PASSWORD)
    assert good.set("sasl:private", "x")

    anonymous = Client([sasl_server.address], timeout=T, binary=True)
    assert anonymous.get("sasl:private") is None
    with pytest.raises(pylibmc.Error):
        anonymous.set("sasl:private", "y")
    assert good.get("sasl:private") == "x"


@pytest.mark.skipif(SASL_WORKS, reason="libmemcached 1.1 or later logs in reliably")
def test_credentials_are_refused_where_logins_fail_at_random(
    sasl_server: MemcachedServer,
) -> None:
    with pytest.raises(RuntimeError, match="libmemcached 1.0.*--no-binary pylibmc"):
        Client([sasl_server.address], timeout=T, username=USER, password=PASSWORD)
    # Without credentials the client is made as usual (and the server then
    # refuses it its data).
    anonymous = Client([sasl_server.address], timeout=T, binary=True)
    assert anonymous.get("sasl:k") is None


def test_the_version_check_reads_pylibmc() -> None:
    assert libmemcached_version()[:2] == tuple(
        map(int, pylibmc.libmemcached_version.split(".")[:2])
    )


def test_a_client_without_sasl_plugins_is_told_what_to_install() -> None:
    # What pylibmc raises when libsasl2 has no plugin for PLAIN (seen with
    # libmemcached 1.1.4 and SASL_PATH pointing to an empty directory).
    raw = pylibmc.Error("error 40 from memcached_set: FAILED TO SEND AUTHENTICATION")
    with pytest.raises(pylibmc.Error, match="libsasl2-modules.*SASL_PATH"):
        _explain_authentication(raw)
    _explain_authentication(pylibmc.Error("error 31 from memcached_get: TIMEOUT"))
