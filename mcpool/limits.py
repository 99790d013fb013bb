"""Checking a pool's limits: sizes must be whole numbers, timeouts numbers.

Both raise at the call that passed the value, before anything is queued,
with what is wrong and what is allowed:

>>> wait_seconds(float("nan"))
Traceback (most recent call last):
ValueError: timeout must be a number of seconds >= 0 (math.inf waits forever), got nan
"""

from __future__ import annotations

import numbers
import threading

__all__ = ["wait_seconds", "whole_number"]


def wait_seconds(timeout: object, what: str = "timeout") -> float | None:
    """Validate a timeout; ``None`` means wait forever.

    ``math.inf``, and any value too large for the platform's locks, waits
    forever; ``nan``, negative and non-number values are refused.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(
            f"{what} must be a number of seconds (math.inf waits forever), "
            f"got {timeout!r}"
        )
    seconds = float(timeout)
    if not seconds >= 0:  # also catches nan
        raise ValueError(
            f"{what} must be a number of seconds >= 0 (math.inf waits "
            f"forever), got {timeout!r}"
        )
    return None if seconds > threading.TIMEOUT_MAX else seconds


def whole_number(value: object, what: str) -> int:
    """Validate a size: an ``int`` (not a ``bool``) >= 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value
