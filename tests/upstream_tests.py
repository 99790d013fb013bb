"""Getting a project's own test files from the sdist of its installed version.

The files are not kept in this repository: ``pip download`` fetches the
source distribution of the version installed in this environment once, into
``.pytest_cache/d/upstream-sdists`` (kept across runs, like the pylibmc
sdists of ``test_pylibmc_pool_tests.py``), checked against the SHA-256
digest below when the version is one of those; then only the named files are
extracted, by name.

:func:`load_modules` imports them under the plain module names they import
each other by (``conftest``, ``common``...), which this suite's own modules
may also use: those names are bound in :data:`sys.modules` only while the
files are imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from collections.abc import Iterable
from pathlib import Path

#: Digests of the sdists whose tests this suite has run: the releases the
#: dev install gets today and the floors (.ci/floors.txt).
KNOWN_SHA256 = {
    ("cachelib", "0.9.0"): (
        "38222cc7c1b79a23606de5c2607f4925779e37cdcea1c2ad21b8bae94b5425a5"
    ),
    ("cachelib", "0.17.0"): (
        "f3c7dc8d3c1132ab699681ffdf8a52d341d9425ac1401c538cf0b1d87b1677c8"
    ),
    ("flask-caching", "2.0.1"): (
        "10df200a03f032af60077befe41779dd94898b67c82040d34e87210b71ba2638"
    ),
    ("flask-caching", "2.5.1"): (
        "f75b451fde3faac0e278da72263818134deca8c4ba6bb07b9b3b238991368dae"
    ),
}

_MODULE_FILE = re.compile(r"[A-Za-z0-9_]+\.py")

CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "d" / "upstream-sdists"


class UpstreamTestsUnavailable(Exception):
    """A project's tests could not be obtained; the message says why."""


def _download(project: str, version: str, scratch: Path) -> Path:
    digest = KNOWN_SHA256.get((project, version))
    requirements = scratch / "requirements.txt"
    line = f"{project}=={version}"
    if digest is not None:
        line += f" --hash=sha256:{digest}"
    requirements.write_text(line + "\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--requirement",
        str(requirements),
        "--dest",
        str(scratch / "dist"),
    ]
    if digest is not None:
        command.append("--require-hashes")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    archives = sorted((scratch / "dist").glob("*.tar.gz"))
    if done.returncode != 0 or len(archives) != 1:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise UpstreamTestsUnavailable(
            f"pip could not download the sdist of {project} {version} (PyPI "
            f"unreachable?); put it into {CACHE}:\n$ {' '.join(command)}\n{tail}"
        )
    return archives[0]


def obtain(project: str) -> tuple[str, Path]:
    """``(version, directory)``: the installed version of *project* and a
    directory holding the Python files of its sdist's ``tests/``.

    :raises UpstreamTestsUnavailable: the sdist could not be downloaded.
    """
    version = importlib.metadata.version(project)
    root = CACHE / f"{project}-{version}"
    if (root / "conftest.py").exists():
        return version, root
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        archive = _download(project, version, Path(scratch))
        extracted = Path(scratch, "tests")
        extracted.mkdir()
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                # Only <top>/tests/<name>.py, written under a name checked
                # here: nothing in the archive chooses a path on this machine.
                if (
                    member.isfile()
                    and len(parts) == 3
                    and parts[1] == "tests"
                    and _MODULE_FILE.fullmatch(parts[2])
                ):
                    content = tar.extractfile(member)
                    assert content is not None
                    (extracted / parts[2]).write_bytes(content.read())
        if not (extracted / "conftest.py").exists():
            raise UpstreamTestsUnavailable(f"{archive.name} has no tests/conftest.py")
        shutil.rmtree(root, ignore_errors=True)
        extracted.rename(root)
    return version, root


def load_modules(
    root: Path, names: Iterable[str], stubs: dict[str, types.ModuleType]
) -> dict[str, types.ModuleType]:
    """Import ``root/<name>.py`` for each name, in order, under its plain
    name; *stubs* stand in for modules they import but do not need here.

    Every name (stubs included) is taken out of :data:`sys.modules` again
    afterwards and what was there before is put back.
    """
    names = list(names)
    borrowed = set(names) | set(stubs)
    saved = {name: sys.modules.pop(name) for name in borrowed if name in sys.modules}
    loaded: dict[str, types.ModuleType] = {}
    try:
        sys.modules.update(stubs)
        for name in names:
            spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            loaded[name] = module
    finally:
        for name in borrowed:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    return loaded


def xprocess_stub() -> types.ModuleType:
    """``xprocess`` as the projects' conftest files import it: only the name
    ``ProcessStarter``. Their server fixtures, the only users, are replaced
    by fixtures on mcpool.testing's servers."""
    module = types.ModuleType("xprocess")
    module.ProcessStarter = object  # type: ignore[attr-defined]
    return module


def fixtures_of(
    module: types.ModuleType, leave_out: Iterable[str]
) -> dict[str, object]:
    """The pytest fixtures a module defines, but those named in *leave_out*."""
    skipped = set(leave_out)
    found = {}
    for name, value in vars(module).items():
        if name in skipped or name.startswith("__"):
            continue
        if _is_fixture(value):
            found[name] = value
    return found


def _is_fixture(value: object) -> bool:
    # pytest 8.4 and later wrap fixtures in FixtureFunctionDefinition;
    # earlier ones mark the function with _pytestfixturefunction.
    try:
        from _pytest.fixtures import FixtureFunctionDefinition
    except ImportError:
        return hasattr(value, "_pytestfixturefunction")
    return isinstance(value, FixtureFunctionDefinition)
