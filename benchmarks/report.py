"""How the benchmark scripts report: markdown tables, medians, versions, JSON.

The scripts under ``benchmarks/`` print their results as markdown tables that
README.md, docs/ and ``benchmarks/results/`` quote, so the format lives here,
in one place. The scripts are run as ``python benchmarks/bench_x.py``, which
puts this folder first on ``sys.path``::

    from report import median_by_key, print_markdown_table, versions_line

    med = median_by_key(runs)  # runs: one dict of numbers per run
    print_markdown_table("Title (3 runs, medians)", ["pool", "ops/s"],
                         [["mcpool", f"{med['ops_per_s']:.0f}"]])
    print(versions_line())  # python 3.11.7, pylibmc 1.6.3
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None
) -> list[str]:
    """The lines of a markdown table: the header, the alignment line, the rows.

    :param align: ``"l"`` or ``"r"`` per column; by default the first column
        is left-aligned and the others, numbers, right-aligned.
    :raises ValueError: if *align* does not give one letter per column.

    >>> markdown_table(["pool", "ops/s"], [["mcpool", "1000"]])
    ['| pool | ops/s |', '|---|---:|', '| mcpool | 1000 |']
    """
    if align is None:
        align = "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align needs l or r for each of {len(header)} columns")
    rule = "|" + "".join("---|" if a == "l" else "---:|" for a in align)
    return [_row(header), rule, *(_row(row) for row in rows)]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def print_markdown_table(
    title: str,
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    align: str | None = None,
) -> None:
    """Print *title*, a blank line, the table (see :func:`markdown_table`) and a
    blank line."""
    print(title)
    print()
    for line in markdown_table(header, rows, align):
        print(line)
    print()


def print_ns_per_op_table(
    title: str, samples: Mapping[str, Sequence[float]], baseline: str
) -> dict[str, float]:
    """Print the table of ns per operation, one row per pool: the median and the
    fastest of its samples, and its speed-up over the *baseline* pool (pylibmc's)
    in medians.

    :param samples: pool name -> ns per operation, one value per round.
    :returns: pool name -> median ns per operation, for the JSON.
    """
    base = statistics.median(samples[baseline])
    medians: dict[str, float] = {}
    rows = []
    for name, values in samples.items():
        med = medians[name] = statistics.median(values)
        rows.append([name, f"{med:.0f}", f"{min(values):.0f}", f"{base / med:.2f}x"])
    print_markdown_table(
        title, ["pool", "median ns/op", "min ns/op", "speed-up vs pylibmc"], rows
    )
    return medians


def median_by_key(
    runs: Sequence[Mapping[str, float]], keys: Iterable[str] | None = None
) -> dict[str, float]:
    """Each number's median over *runs*, keyed as in the first run.

    :param keys: the keys to take, by default all of the first run's.

    >>> median_by_key([{"ops": 1.0}, {"ops": 3.0}, {"ops": 2.0}])
    {'ops': 2.0}
    """
    if keys is None:
        keys = runs[0]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def _pylibmc_version() -> str:
    import pylibmc

    return str(pylibmc.__version__)


def _libmemcached_version() -> str:
    import pylibmc

    return str(pylibmc.libmemcached_version)


_VERSIONS: dict[str, Callable[[], str]] = {
    "python": lambda: sys.version.split()[0],
    "pylibmc": _pylibmc_version,
    "libmemcached": _libmemcached_version,
}


def versions_line(*names: str) -> str:
    """The versions that produced a table, in the order of *names*.

    :param names: any of ``python``, ``pylibmc``, ``libmemcached``; by
        default python and pylibmc.
    :raises KeyError: for another name.

    >>> versions_line("python")  # doctest: +SKIP
    'python 3.11.7'
    """
    return ", ".join(
        f"{name} {_VERSIONS[name]()}" for name in names or ("python", "pylibmc")
    )


def write_json(path: str | Path, results: Any) -> None:
    """Write *results* to *path* as indented JSON, for plots and later reading."""
    with open(path, "w") as out:
        json.dump(results, out, indent=2)


def load_baseline(checkout: str) -> types.ModuleType:
    """Import the ``mcpool`` package of another checkout as ``mcpool_baseline``.

    For before/after tables in one run: ``git worktree add /tmp/before
    <commit>``, then ``--baseline /tmp/before``. The package's imports are
    relative, so both versions live side by side in one process.
    """
    package = Path(checkout, "mcpool")
    spec = importlib.util.spec_from_file_location(
        "mcpool_baseline",
        package / "__init__.py",
        submodule_search_locations=[str(package)],
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"no mcpool package in {checkout}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mcpool_baseline"] = module
    spec.loader.exec_module(module)
    return module
