"""pylibmc's own pool tests, unchanged, run against mcpool's pools.

mcpool says :class:`~mcpool.ClientPool` and :class:`~mcpool.ThreadMappedPool`
are drop-ins for ``pylibmc.ClientPool`` and ``pylibmc.ThreadMappedPool``;
pylibmc's ``tests/test_pooling.py`` is the acceptance test for that claim.

The tests are not kept in this repository: each pytest run takes them from
pylibmc's source distributions on PyPI, downloaded once with ``pip download``
into pytest's cache (``.pytest_cache/d/pylibmc-sdists``) and checked against
the SHA-256 digests below. Each of pylibmc's test methods becomes one pytest
test, run as written, with the test module's ``pylibmc`` name bound to a copy
of the pylibmc module whose ``ClientPool`` and ``ThreadMappedPool`` are
mcpool's, and ``MEMCACHED_HOST``/``MEMCACHED_PORT`` (which pylibmc's test
helper reads) pointing at the suite's memcached server.

* pylibmc 1.6.1: its setup.py opens files in mode ``"U"``, which Python 3.11
  removed, and ``pip download`` runs setup.py to read an sdist's metadata even
  with ``--no-deps``; it is downloaded with a Python 3.10 or older (found on
  ``PATH`` or under ``$PYENV_ROOT/versions``). Its tests import ``eq_`` and
  ``ok_`` from nose, which no longer imports on current Pythons; they are
  given nose's two one-line assertions instead.
* pylibmc 1.6.3: the newest release, whose test_pooling.py is the same as
  pylibmc's repository today.
* pylibmc2 1.6.4: a fork that publishes the same tests.

A version whose tests cannot be had fails its ``obtain`` test, never skips.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import unittest
from pathlib import Path
from typing import Any

import pylibmc
import pytest

import mcpool
from mcpool.testing import MemcachedServer


@dataclasses.dataclass(frozen=True)
class Sdist:
    project: str
    version: str
    sha256: str
    #: the newest Python whose pip can read the sdist's metadata, if limited
    python_at_most: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        return f"{self.project}-{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.label}.tar.gz"


SDISTS = (
    Sdist(
        "pylibmc",
        "1.6.1",
        "8a8dd406487d419d58c6d944efd91e8189b360a0c4d9e8c6ebe3990d646ae7e9",
        python_at_most=(3, 10),
    ),
    Sdist(
        "pylibmc",
        "1.6.3",
        "eefa46115537abad65fbe2e032acd1b3463d9bf9e335af4b0916df4e4d3206e0",
    ),
    Sdist(
        "pylibmc2",
        "1.6.4",
        "a9cd394c26f92e53c842e016965bc0cab0a97e1a118ef44945ff4674e6038fce",
    ),
)

# The files of the sdist's tests/ that test_pooling.py needs.
TEST_FILES = ("__init__.py", "test_pooling.py")


class SdistUnavailable(Exception):
    """pylibmc's tests of one version could not be obtained."""


# -- getting the tests -----------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pythons_for(sdist: Sdist) -> list[str]:
    """Interpreters to run ``pip download`` with, best first."""
    limit = sdist.python_at_most
    if limit is None or sys.version_info[:2] <= limit:
        return [sys.executable]
    found: list[str] = []
    for minor in range(limit[1], 7, -1):
        path = shutil.which(f"python{limit[0]}.{minor}")
        if path is not None:
            found.append(path)
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for path in sorted(
        glob.glob(
            os.path.join(pyenv_root, "versions", f"{limit[0]}.*", "bin", "python")
        ),
        reverse=True,
    ):
        found.append(path)
    usable = []
    for python in found:
        # pyenv's shims exist for versions that are not selected, and fail.
        probe = subprocess.run(
            [python, "-c", "import pip, sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if probe.returncode == 0:
            major, minor = (int(part) for part in probe.stdout.split())
            if (major, minor) <= limit:
                usable.append(python)
    return usable


def _download(sdist: Sdist, cache: Path) -> Path:
    """Download *sdist* into *cache* with pip; return the archive's path."""
    pythons = _pythons_for(sdist)
    if not pythons:
        assert sdist.python_at_most is not None
        newest = ".".join(map(str, sdist.python_at_most))
        raise SdistUnavailable(
            f"{sdist.label}'s setup.py runs only on Python {newest} or older, and "
            "pip download runs it to read the sdist's metadata; no such Python "
            "with pip was found on PATH or under $PYENV_ROOT/versions. Install "
            f"one (pyenv install {newest}), or put {sdist.filename} "
            f"(sha256 {sdist.sha256}) into {cache}"
        )
    failures = []
    with tempfile.TemporaryDirectory() as scratch:
        requirements = Path(scratch, "requirements.txt")
        requirements.write_text(
            f"{sdist.project}=={sdist.version} --hash=sha256:{sdist.sha256}\n"
        )
        for python in pythons:
            command = [
                python,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--no-binary",
                sdist.project,
                "--require-hashes",
                "--requirement",
                str(requirements),
                "--dest",
                scratch,
            ]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            archive = Path(scratch, sdist.filename)
            if done.returncode == 0 and archive.exists():
                target = cache / sdist.filename
                shutil.move(archive, target)
                return target
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            failures.append(f"$ {' '.join(command)}\n{tail}")
    raise SdistUnavailable(
        f"pip could not download {sdist.label}'s sdist (PyPI unreachable?); "
        f"or put {sdist.filename} (sha256 {sdist.sha256}) into {cache}:\n\n"
        + "\n\n".join(failures)
    )


def obtain(sdist: Sdist, cache: Path) -> Path:
    """The directory holding *sdist*'s ``tests`` package, from the cache or PyPI."""
    archive = cache / sdist.filename
    if not archive.exists():
        archive = _download(sdist, cache)
    digest = _digest(archive)
    if digest != sdist.sha256:
        raise SdistUnavailable(
            f"{archive} has sha256 {digest}, not the pinned {sdist.sha256}; "
            "delete it to download it again"
        )
    root = cache / sdist.label
    tests = root / "tests"
    if not all((tests / name).exists() for name in TEST_FILES):
        tests.mkdir(parents=True, exist_ok=True)
        # Only the named files are written, by name: nothing in the archive
        # chooses a path on this machine.
        with tarfile.open(archive) as tar:
            for name in TEST_FILES:
                member = tar.extractfile(f"{sdist.label}/tests/{name}")
                if member is None:
                    raise SdistUnavailable(f"{archive} has no tests/{name}")
                (tests / name).write_bytes(member.read())
    return root


# -- running them against mcpool ------------------------------------------


def _nose_tools() -> dict[str, types.ModuleType]:
    """The two nose assertions pylibmc 1.6.1's tests use, as nose defines them."""

    def eq_(a: Any, b: Any, msg: str | None = None) -> None:
        if not a == b:
            raise AssertionError(msg or f"{a!r} != {b!r}")

    def ok_(expr: Any, msg: str | None = None) -> None:
        if not expr:
            raise AssertionError(msg)

    nose = types.ModuleType("nose")
    tools = types.ModuleType("nose.tools")
    tools.eq_ = eq_  # type: ignore[attr-defined]
    tools.ok_ = ok_  # type: ignore[attr-defined]
    nose.tools = tools  # type: ignore[attr-defined]
    return {"nose": nose, "nose.tools": tools}


def _pylibmc_with_mcpool_pools() -> types.ModuleType:
    """pylibmc as the tests see it: everything pylibmc's, the pools mcpool's."""
    module = types.ModuleType("pylibmc", pylibmc.__doc__)
    module.__dict__.update(
        {name: value for name, value in vars(pylibmc).items() if name != "__name__"}
    )
    module.ClientPool = mcpool.ClientPool  # type: ignore[attr-defined]
    module.ThreadMappedPool = mcpool.ThreadMappedPool  # type: ignore[attr-defined]
    return module


def _load(path: Path, name: str, package: bool = False) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_test_module(root: Path) -> types.ModuleType:
    """Import pylibmc's ``tests.test_pooling`` from *root*, as written.

    It imports ``from tests import PylibmcTestCase``, and this suite's own
    directory is also called ``tests``: the names are bound in
    :data:`sys.modules` only while it is imported.
    """
    borrowed = {"tests", "tests.test_pooling", "nose", "nose.tools"}
    saved = {name: sys.modules.pop(name) for name in borrowed if name in sys.modules}
    try:
        sys.modules.update(_nose_tools())
        _load(root / "tests" / "__init__.py", "tests", package=True)
        module = _load(root / "tests" / "test_pooling.py", "tests.test_pooling")
    finally:
        for name in borrowed:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    module.pylibmc = _pylibmc_with_mcpool_pools()  # type: ignore[attr-defined]
    return module


@dataclasses.dataclass(frozen=True)
class PylibmcTest:
    """One of pylibmc's test methods, or why a version's could not be had."""

    case: type[unittest.TestCase] | None
    method: str
    unavailable: str = ""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pylibmc_test" not in metafunc.fixturenames:
        return
    pytest_cache = getattr(metafunc.config, "cache", None)
    if pytest_cache is not None:
        cache = pytest_cache.mkdir("pylibmc-sdists")
    else:  # -p no:cacheprovider: keep the archives beside the suite instead
        cache = Path(metafunc.config.rootpath, ".pylibmc-sdists")
        cache.mkdir(exist_ok=True)
    params = []
    for sdist in SDISTS:
        try:
            module = load_test_module(obtain(sdist, cache))
        except SdistUnavailable as exc:
            params.append(
                pytest.param(
                    PylibmcTest(None, "", str(exc)), id=f"{sdist.label}-obtain"
                )
            )
            continue
        suite = unittest.defaultTestLoader.loadTestsFromModule(module)
        found = [
            test
            for group in suite
            for test in group
            if isinstance(test, unittest.TestCase)
        ]
        if not found:
            reason = f"{sdist.label}'s test_pooling.py has no tests"
            params.append(
                pytest.param(PylibmcTest(None, "", reason), id=f"{sdist.label}-obtain")
            )
        for test in found:
            cls = type(test)
            method = test._testMethodName
            params.append(
                pytest.param(
                    PylibmcTest(cls, method),
                    id=f"{sdist.label}-{cls.__name__}.{method}",
                )
            )
    metafunc.parametrize("pylibmc_test", params)


def test_pylibmc_pool_test(
    pylibmc_test: PylibmcTest,
    memcached: MemcachedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if pylibmc_test.case is None:
        pytest.fail(pylibmc_test.unavailable, pytrace=False)
    monkeypatch.setenv("MEMCACHED_TYPE", "tcp")
    monkeypatch.setenv("MEMCACHED_HOST", memcached.host)
    monkeypatch.setenv("MEMCACHED_PORT", str(memcached.port))
    case = pylibmc_test.case(pylibmc_test.method)
    try:
        # debug() runs setUp, the test and tearDown, raising what they raise.
        case.debug()
    except unittest.SkipTest as exc:
        pytest.fail(f"pylibmc's test skipped itself: {exc}", pytrace=False)
