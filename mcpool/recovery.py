"""Slots lost by their holders: telling them apart, and saying where they were
reserved.

A pool's slot is idle, or held by one :class:`~mcpool.Reservation`, which
the slot refers to and which refers back to the slot. Releasing breaks that
cycle. A reservation that only its slot still refers to was dropped without
being released (a lease forgotten, a thread that died holding one, a WSGI
response never closed): nobody can release it any more, and the pool frees
its slot (:meth:`Pool._find_lost <mcpool.Pool>`) and reports it here.

Reference counts tell the two apart at no cost on the hot path; a weak
reference per reservation cost 0.1-0.2 us a reserve.

.. code-block:: python

    if holder_dropped(slot):
        ...  # free the slot, then report_recovered(...)
"""

from __future__ import annotations

import linecache
import logging
import sys
import warnings
from types import CodeType
from typing import Any, Protocol

__all__ = [
    "describe_site",
    "holder_dropped",
    "item_referenced_elsewhere",
    "report_recovered",
]

logger = logging.getLogger("mcpool")


class _Slot(Protocol):
    holder: Any
    item: Any


def _holder_refs(slot: _Slot) -> int:
    return sys.getrefcount(slot.holder)


def _item_refs(slot: _Slot) -> int:
    return sys.getrefcount(slot.item)


def _calibrate() -> int:
    """What the counters above read for an object only the slot refers to
    (what the interpreter's own calls add varies between versions)."""

    class Probe:
        __slots__ = ("holder", "item")
        holder: Any
        item: Any

    probe = Probe()
    probe.holder = probe.item = object()  # one object, two references
    counts = {_holder_refs(probe) - 1, _item_refs(probe) - 1}
    assert len(counts) == 1, counts
    return counts.pop()


_ONLY_THE_SLOTS = _calibrate()


def holder_dropped(slot: _Slot) -> bool:
    """Whether *slot* has a holder that nobody but the slot refers to.

    The caller must not hold the holder in a variable of its own.
    """
    return slot.holder is not None and _holder_refs(slot) <= _ONLY_THE_SLOTS


def item_referenced_elsewhere(slot: _Slot) -> bool:
    """Whether anyone but *slot* refers to its item (closing it would break
    them)."""
    return _item_refs(slot) > _ONLY_THE_SLOTS


def _line_of(code: CodeType, offset: int) -> int | None:
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return line
    return None


def describe_site(site: tuple[Any, int] | None) -> str:
    """``file:line in function: source`` for a (code, bytecode offset) pair."""
    if site is None:
        return "an unknown place"
    code, offset = site
    line = _line_of(code, offset)
    where = f"{code.co_filename}:{line} in {code.co_name}"
    source = linecache.getline(code.co_filename, line or 0).strip()
    return f"{where}: {source}" if source else where


def report_recovered(
    pool_name: str,
    site: tuple[Any, int] | None,
    stack: list[tuple[str, int, str]] | None,
    still_used: bool,
) -> None:
    """Log, and warn with :class:`ResourceWarning`, of an item whose
    reservation was dropped without being released.

    *site* is the reserving call where the pool recorded it (leases, and
    reservations that had to wait or be vetted); *stack* the leak detector's
    record, where one is on.
    """
    fate = (
        "it is still referenced elsewhere, so the pool forgets it without closing it"
        if still_used
        else "the pool closed it"
    )
    if site is not None:
        where = describe_site(site)
    elif stack:
        filename, lineno, name = stack[-1]
        where = f"{filename}:{lineno} in {name}"
    else:
        where = (
            "an unknown place (a pool made with leak_timeout= records where "
            "each item is reserved)"
        )
    message = (
        f"{pool_name}: an item reserved at {where} was dropped without being "
        f"released; its slot is free again and {fate}. Use 'with "
        "pool.reserve() as item:' or release every lease in a finally block"
    )
    logger.warning("%s", message)
    warnings.warn(message, ResourceWarning, stacklevel=2)
