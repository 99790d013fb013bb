"""Django's own memcached cache tests, unchanged, on ``mcpool.django.PyLibMCCache``.

mcpool says its backend is a drop-in for Django's ``PyLibMCCache``; Django's
``PyLibMCCacheTests`` (and all it inherits from ``BaseMemcachedTests`` and
``BaseCacheTests``) are the acceptance test for that claim.

The tests are not kept in this repository: they come from the source
distribution of the installed Django release, downloaded once with ``pip
download`` into pytest's cache (``.pytest_cache/d/django-sdists``; pip checks
the archive against the digest the index publishes). Only the files that
Django's runner needs for the ``cache`` tests are unpacked. Two files of
this suite go in beside them (``tests/django_suite/``): the settings, which
name the test's memcached under the stock ``BACKEND`` string (Django's tests
find their memcached that way), and a module in the ``cache`` test app that
subclasses ``PyLibMCCacheTests`` with ``BACKEND`` switched to mcpool's. Then
Django's ``runtests.py`` runs that module alone, and must succeed.

If the sdist cannot be had (no network, no PyPI), the test fails, never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import django
import pytest
from upstream_tests import UpstreamTestsUnavailable, download_sdist

from mcpool.testing import MemcachedServer

HERE = Path(__file__).resolve().parent / "django_suite"
SETTINGS = "mcpool_settings"
TEST_MODULE = "mcpool_cache_tests"

# What runtests.py needs to run the cache tests, below the sdist's tests/.
SUITE_FILES = ("runtests.py", "urls.py")
SUITE_DIRS = ("cache",)

RUN_TIMEOUT = 600.0


def _download(version: str, cache: Path) -> Path:
    """The sdist of Django *version*, from the cache or PyPI."""
    archive = cache / f"django-{version}.tar.gz"
    if archive.exists():
        return archive
    with tempfile.TemporaryDirectory() as scratch:
        try:
            downloaded = download_sdist("django", version, Path(scratch))
        except UpstreamTestsUnavailable as exc:
            pytest.fail(f"{exc}\n(or put the sdist at {archive})", pytrace=False)
        shutil.move(downloaded, archive)
    return archive


def _unpack(archive: Path, into: Path) -> Path:
    """Unpack the files the cache tests need; return the suite's tests/ dir."""
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        wanted = {f"{top}/tests/{name}" for name in SUITE_FILES}
        prefixes = tuple(f"{top}/tests/{name}/" for name in SUITE_DIRS)
        for member in tar.getmembers():
            if not member.isfile():
                continue
            if member.name not in wanted and not member.name.startswith(prefixes):
                continue
            # Written by name, under *into*: nothing in the archive picks a
            # path on this machine.
            relative = Path(member.name).relative_to(top)
            if ".." in relative.parts:
                continue
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
    suite = into / "tests"
    missing = [name for name in SUITE_FILES if not (suite / name).exists()]
    if missing:
        pytest.fail(f"{archive} has no tests/{', tests/'.join(missing)}")
    return suite


@pytest.fixture(scope="module")
def django_suite(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    pytest_cache = getattr(request.config, "cache", None)
    if pytest_cache is not None:
        cache = Path(pytest_cache.mkdir("django-sdists"))
    else:  # -p no:cacheprovider: keep the archives beside the suite instead
        cache = Path(request.config.rootpath, ".django-sdists")
        cache.mkdir(exist_ok=True)
    archive = _download(django.__version__, cache)
    suite = _unpack(archive, tmp_path_factory.mktemp("django-suite"))
    shutil.copy(HERE / f"{SETTINGS}.py", suite / f"{SETTINGS}.py")
    shutil.copy(HERE / f"{TEST_MODULE}.py", suite / "cache" / f"{TEST_MODULE}.py")
    return suite


def test_djangos_pylibmc_cache_tests_pass_on_mcpool_backend(
    django_suite: Path, fresh_memcached: MemcachedServer
) -> None:
    command = [
        sys.executable,
        "runtests.py",
        f"cache.{TEST_MODULE}",
        f"--settings={SETTINGS}",
        "--parallel=1",
        "--noinput",
        "--verbosity=2",
    ]
    done = subprocess.run(
        command,
        cwd=django_suite,
        env={**os.environ, "MCPOOL_DJANGO_MEMCACHED": fresh_memcached.address},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, (
        f"Django {django.__version__}'s cache tests failed on mcpool's backend:\n"
        f"$ {' '.join(command)}\n{output}"
    )
    # Django's runner prints each test's outcome; make sure ours ran, and no
    # test was skipped for a reason other than Django's own for memcached.
    assert "test_runs_on_mcpool_backend" in output and " ... ok" in output, output
    skips = [line for line in output.splitlines() if " ... skipped" in line]
    unexpected = [line for line in skips if "Culling isn't implemented" not in line]
    assert not unexpected, "\n".join(unexpected)
