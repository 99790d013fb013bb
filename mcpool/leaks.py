"""Leak detection: who holds a pooled item, since when, reserved where.

Switched on by ``leak_timeout=`` on a pool. Then every reservation records
the thread and the stack of the ``reserve()`` call; an item held longer than
*leak_timeout* is logged on the ``mcpool`` logger, and
:class:`~mcpool.PoolTimeout` messages name the longest holders. Switched
off, the pool holds a :class:`NoLeakDetector`, whose methods do nothing.

.. code-block:: python

    pool = ClientPool(master, 8, leak_timeout=5.0)
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["LeakDetector", "NoLeakDetector"]

logger = logging.getLogger("mcpool")

_OWN_DIR = os.path.dirname(os.path.abspath(__file__))


def _is_own_file(filename: str) -> bool:
    return filename.startswith(_OWN_DIR) or filename.endswith("contextlib.py")


def format_stack(frames: list[tuple[str, int, str]]) -> str:
    """Format recorded frames as a traceback does, source lines included."""
    summary = traceback.StackSummary.from_list(
        [(filename, lineno, name, None) for filename, lineno, name in frames]
    )
    return "".join(summary.format())


class _Held(Protocol):
    reserved_at: float
    reserved_by: str
    reserved_stack: list[tuple[str, int, str]] | None


class LeakDetector:
    """Records reservations and reports the ones held past *leak_timeout*."""

    def __init__(
        self, pool_name: str, leak_timeout: float, clock: Callable[[], float]
    ) -> None:
        self.pool_name = pool_name
        self.leak_timeout = leak_timeout
        self.clock = clock
        self.held: set[Any] = set()
        self.reported: set[Any] = set()
        self.next_scan = 0.0

    def on_take(self, entry: _Held) -> None:
        """Note who took *entry*, and report overdue holders now and then."""
        now = self.clock()
        entry.reserved_at = now
        entry.reserved_by = threading.current_thread().name
        # The caller's line is what matters, not the pool's own frames.
        # Only (file, line, function) per frame: building FrameSummary objects
        # and reading source lines for every reservation cost 40 µs a
        # reservation; the report builds them when it is written.
        frames: list[tuple[str, int, str]] = []
        frame = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if not _is_own_file(code.co_filename):
                frames.append((code.co_filename, frame.f_lineno, code.co_name))
            frame = frame.f_back  # type: ignore[assignment]
        frames.reverse()
        entry.reserved_stack = frames
        self.held.add(entry)
        if now >= self.next_scan:
            self.next_scan = now + self.leak_timeout / 2
            self.scan(now)

    def on_give(self, entry: _Held) -> None:
        """Forget *entry*; log its return if it had been reported."""
        self.held.discard(entry)
        if entry in self.reported:
            self.reported.discard(entry)
            logger.warning(
                "%s: item reserved by thread %s came back after %.2f s "
                "(leak_timeout=%.2f s)",
                self.pool_name,
                entry.reserved_by,
                self.clock() - entry.reserved_at,
                self.leak_timeout,
            )

    def scan(self, now: float | None = None) -> int:
        """Log every holder past *leak_timeout* not yet reported; return how many."""
        if now is None:
            now = self.clock()
        found = 0
        for entry in list(self.held):
            held_for = now - entry.reserved_at
            if held_for > self.leak_timeout and entry not in self.reported:
                self.reported.add(entry)
                found += 1
                stack = entry.reserved_stack
                logger.warning(
                    "%s: item held for %.2f s by thread %s, longer than "
                    "leak_timeout=%.2f s; reserved at:\n%s",
                    self.pool_name,
                    held_for,
                    entry.reserved_by,
                    self.leak_timeout,
                    format_stack(stack) if stack else "(unknown)",
                )
        return found

    def holders(self, limit: int = 3) -> str:
        """The longest holders, for an error message (empty if none)."""
        now = self.clock()
        oldest = sorted(self.held, key=lambda e: e.reserved_at)[:limit]
        parts = []
        for entry in oldest:
            where = "an unknown place"
            if entry.reserved_stack:
                filename, lineno, name = entry.reserved_stack[-1]
                where = f"{filename}:{lineno} in {name}"
            parts.append(
                f"thread {entry.reserved_by} for {now - entry.reserved_at:.2f} s, "
                f"reserved at {where}"
            )
        return "; longest holders: " + "; ".join(parts) if parts else ""


class NoLeakDetector:
    """Leak detection switched off: records nothing, reports nothing."""

    def on_take(self, entry: _Held) -> None:
        pass

    def on_give(self, entry: _Held) -> None:
        pass

    def scan(self, now: float | None = None) -> int:
        return 0

    def holders(self, limit: int = 3) -> str:
        return ""
