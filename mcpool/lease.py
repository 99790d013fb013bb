"""A pooled item reserved by hand: :meth:`Pool.checkout <mcpool.Pool.checkout>`.

.. code-block:: python

    lease = pool.checkout()
    try:
        lease.item.set("k", "v")
    finally:
        lease.release()
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from .pool import Reservation

__all__ = ["Lease"]

T = TypeVar("T")


class Lease(Generic[T]):
    """An item taken by :meth:`Pool.checkout`, released by hand.

    :meth:`release` is idempotent: the first call returns the item, later
    calls do nothing, so every cleanup path may call it. A lease dropped
    unreleased is noticed by the pool, which frees the item's slot and
    warns, naming the line of the :meth:`~Pool.checkout`.
    """

    __slots__ = ("_entry", "__weakref__")

    def __init__(self, entry: Reservation[T]) -> None:
        self._entry: Reservation[T] | None = entry

    @property
    def item(self) -> T:
        """The reserved item.

        :raises RuntimeError: after :meth:`release`.
        """
        entry = self._entry
        if entry is None:
            raise RuntimeError("the lease was released; check out a new one")
        return entry.item

    @property
    def released(self) -> bool:
        """True once :meth:`release` was called."""
        return self._entry is None

    def release(self, discard: bool = False, exc: BaseException | None = None) -> None:
        """Return the item to the pool, once.

        :param discard: close the item instead of returning it.
        :param exc: an exception raised while the item was in use; the pool's
            *discard_on* decides whether it means the item is broken.
        """
        entry = self._entry
        if entry is None:
            return
        self._entry = None
        if not discard:
            # The reservation's own return path, with its inlined common case.
            entry.__exit__(None, exc, None)
            return
        pool = entry._pool
        if pool is not None:
            pool._release(entry, exc, discard=True)

    def __enter__(self) -> T:
        return self.item

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release(exc=exc)
