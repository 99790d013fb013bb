"""A pool of pylibmc clients cloned from a master: drop-in for ``pylibmc.ClientPool``.

.. code-block:: python

    import pylibmc
    from mcpool import ClientPool

    master = pylibmc.Client(["127.0.0.1:11211"], binary=True)
    pool = ClientPool(master, 8)
    with pool.reserve() as mc:
        mc.set("greeting", "hello")

The memcached specifics live here: the factory (``master.clone()``), which
pylibmc errors mean a client's connection or protocol state is broken
(:func:`is_fatal_error`), and how new behaviours reach every clone.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pylibmc

from .errors import PoolError, ServerUnavailable
from .fork import abandon
from .pool import Pool
from .servers import ServerHealth
from .stats import PoolStats

__all__ = ["BENIGN_ERRORS", "KEEPALIVE_KEY", "ClientPool", "ClientT", "is_fatal_error"]

#: The type of the clients a pool holds: ``pylibmc.Client`` or a subclass
#: (:class:`mcpool.Client`), the type of the master given to the pool.
ClientT = TypeVar("ClientT", bound=pylibmc.Client)

#: The keys the keepalive check deletes, one per server (with a number
#: appended): no application stores them, so the delete changes nothing.
KEEPALIVE_KEY = "mcpool:keepalive"

# Servers a client already has on record as failed: the keepalive check keeps
# the client, whose record spares the next requests a wait.
_MARKED_FAILED: tuple[type[BaseException], ...] = tuple(
    getattr(pylibmc, name)
    for name in ("ServerDown", "ServerDead")
    if hasattr(pylibmc, name)
)

#: pylibmc errors that say something about a key or a value, not about the
#: connection: the client that raised them is fine and goes back to the pool.
BENIGN_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(pylibmc, name)
    for name in (
        "NotFound",
        "CacheMiss",
        "TooBig",
        "BadKeyProvided",
        "DataExists",
        "DataDoesNotExist",
        "NotSupportedError",
        "UnknownStatKey",
    )
    if hasattr(pylibmc, name)
) + (
    # mcpool.Client raises it after libmemcached closed the failed server's
    # socket: the client is sound, and keeping it keeps its record of which
    # server failed (a fresh clone would wait out the timeout again).
    ServerUnavailable,
)


def is_fatal_error(exc: BaseException) -> bool:
    """Whether *exc*, raised while a client was in use, means the client is broken.

    A pylibmc error other than the :data:`BENIGN_ERRORS` (a dead server, a
    read or write error, a protocol error, an unmapped libmemcached error)
    may leave the client's socket in the middle of a reply; such a client is
    closed and replaced rather than handed to the next request. Exceptions
    that are not pylibmc's (the application's own, :class:`~mcpool.InvalidKey`)
    leave the client as it was.

    >>> is_fatal_error(pylibmc.ServerDown("down"))
    True
    >>> is_fatal_error(pylibmc.NotFound("gone"))
    False
    >>> is_fatal_error(KeyError("x"))
    False
    """
    return isinstance(exc, pylibmc.Error) and not isinstance(exc, BENIGN_ERRORS)


def _disconnect(client: pylibmc.Client) -> None:
    client.disconnect_all()


class ClientPool(Pool[ClientT]):
    """A fair, bounded pool of clones of a master pylibmc client.

    Drop-in for ``pylibmc.ClientPool``: ``ClientPool(mc, n_slots)``,
    :meth:`fill`, ``with pool.reserve() as mc:`` and ``reserve(block=False)``
    work as there, and :class:`~mcpool.PoolTimeout` subclasses
    :class:`queue.Empty`. Unlike pylibmc's, clones are made lazily,
    ``reserve()`` waits up to *timeout* seconds (2 by default) for a client,
    waiters are served in arrival order, a client whose block raised a fatal
    pylibmc error (:func:`is_fatal_error`) is replaced, and a forked child
    never touches its parent's clients.

    :param mc: the master client; clones of it are handed out. The master
        itself is never used for requests.
    :param n_slots: the most clones alive at once.
    :param keepalive: before handing out a client idle at least this many
        seconds, check that each of its connections still works (see
        :meth:`answers`), and replace it if one does not. ``None`` (the
        default) never checks.

    The keyword arguments are :class:`~mcpool.Pool`'s.

    >>> pool = ClientPool(pylibmc.Client([server.address]), 4)  # doctest: +SKIP
    >>> with pool.reserve() as mc:  # doctest: +SKIP
    ...     mc.set("k", "v")
    True
    """

    def __init__(
        self,
        mc: ClientT | None = None,
        n_slots: int = 0,
        *,
        timeout: float = 2.0,
        max_waiting: int | None = None,
        keepalive: float | None = None,
        min_idle: int = 0,
        max_idle: float | None = None,
        max_spare: int | None = None,
        max_lifetime: float | None = None,
        lifetime_jitter: float = 0.1,
        discard_on: Callable[[BaseException], bool] = is_fatal_error,
        leak_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
        timings: bool = False,
    ) -> None:
        self.master: ClientT | None = mc
        self._behaviors_version = 0
        self._behaviors: dict[str, Any] = {}
        self._keepalive_keys: list[str] | None = None
        super().__init__(
            self._clone,
            max_size=n_slots,
            min_idle=min_idle if mc is not None else 0,
            timeout=timeout,
            max_waiting=max_waiting,
            check=None if keepalive is None else self.answers,
            keepalive=keepalive,
            max_idle=max_idle,
            max_spare=max_spare,
            max_lifetime=max_lifetime,
            lifetime_jitter=lifetime_jitter,
            close=_disconnect,
            discard_on=discard_on,
            leak_timeout=leak_timeout,
            clock=clock,
            name=name,
            timings=timings,
        )
        self.min_idle = min_idle

    def _default_name(self) -> str:
        """The master's servers, ``"host:port,host:port"``, as OpenTelemetry
        names a pool that has no name of its own."""
        addresses = getattr(self.master, "addresses", None)
        if addresses:
            return ",".join(str(address) for address in addresses)
        return type(self).__name__

    def fill(self, mc: ClientT, n_slots: int) -> None:
        """Use *mc* as the master and allow *n_slots* more clones.

        As with pylibmc, ``ClientPool()`` followed by ``fill(mc, 4)`` gives a
        pool of four; the clones are made when first needed.
        """
        if n_slots < 0:
            raise ValueError(f"n_slots must be >= 0, got {n_slots}")
        with self._lock:
            self.master = mc
            self.max_size += n_slots
            self._grant_free_slots()
        self._replenish()

    def replace_master(self, mc: Any) -> None:
        """Serve clones of *mc* from now on, and replace the old clones.

        The way to change servers (or credentials, or the client class) while
        the pool runs: build a client for the new servers and pass it here.
        Idle clones of the old master are closed now, clones in use when they
        come back (:meth:`~mcpool.Pool.drain`); no request fails because of
        it, and each request uses one master's clone from start to end.
        Behaviours set with :meth:`set_behaviors` before are not carried
        over: *mc* brings its own.

        >>> new = mcpool.Client(["10.0.0.7:11211", "10.0.0.8:11211"])  # doctest: +SKIP
        >>> pool.replace_master(new)  # doctest: +SKIP

        .. versionadded:: 0.1
        """
        if mc is None:
            raise PoolError("replace_master needs a client to clone, got None")
        with self._lock:
            self.master = mc
            self._keepalive_keys = None
            self._behaviors = {}
        self.drain()

    def set_behaviors(self, behaviors: Mapping[str, Any]) -> None:
        """Set behaviours on the master and on every clone.

        Idle clones get them now; clones in use get them when they come back,
        before anyone else reserves them.

        >>> pool.set_behaviors({"tcp_nodelay": True})  # doctest: +SKIP
        """
        if self.master is None:
            raise PoolError("the pool has no master client; call fill(mc, n_slots)")
        self.master.set_behaviors(dict(behaviors))
        with self._lock:
            self._behaviors_version += 1
            # Only what callers changed: re-applying every behaviour the
            # master reports fails (libmemcached refuses verify_keys=0 on a
            # binary-protocol client, for one).
            self._behaviors.update(behaviors)
            # Costs nothing until behaviours change: only then does every
            # returning client pass through this check. Set first: it turns
            # off the pool's lock-free paths, so that no idle client is taken
            # while it is being changed.
            self.reset = self._sync_behaviors
            for slot in list(self._idle):
                self._sync_behaviors(slot.item)

    def answers(self, client: ClientT) -> bool:
        """Whether every server *client* is connected to still answers it.

        The keepalive check: one ``delete`` of a key that no application
        uses (:data:`KEEPALIVE_KEY`) per server, the cheapest request whose
        failure libmemcached always reports. A ``get`` of a missing key
        would cost the same (one round trip, a few bytes each way), but on
        libmemcached 1.0.16 a get on a connection the server closed returns a
        miss without an error. A server the client already has on record as
        failed (``ServerDown``, ``ServerDead``) does not fail the check: the
        record spares the next requests a wait. Any other pylibmc error (a
        broken connection, a timeout on a connection a firewall cut) does.

        >>> pool.answers(client)  # doctest: +SKIP
        True

        .. versionadded:: 0.1
        """
        for key in self._probe_keys():
            try:
                pylibmc.Client.delete(client, key)
            except _MARKED_FAILED:
                continue
            except pylibmc.Error:
                return False
        return True

    def _probe_keys(self) -> list[str]:
        """One key per server of the master, found by its hash."""
        keys = self._keepalive_keys
        if keys is None:
            master = self.master
            if master is None:
                return []
            count = len(getattr(master, "addresses", None) or [None])
            found: dict[int, str] = {}
            for number in range(100 * count):
                if len(found) == count:
                    break
                key = f"{KEEPALIVE_KEY}:{number}"
                found.setdefault(pylibmc.Client.hash(master, key) % count, key)
            keys = self._keepalive_keys = list(found.values())
        return keys

    def _sync_behaviors(self, client: ClientT) -> None:
        if getattr(client, "_mcpool_behaviors", 0) != self._behaviors_version:
            client.set_behaviors(self._behaviors)
            client._mcpool_behaviors = self._behaviors_version  # type: ignore[attr-defined]

    def stats(self) -> PoolStats:
        """:meth:`Pool.stats <mcpool.Pool.stats>`, with the state of each
        server when the master is a :class:`mcpool.Client`.

        >>> [s.address for s in pool.stats().servers]  # doctest: +SKIP
        ['127.0.0.1:11211']
        """
        stats = super().stats()
        health = getattr(self.master, "health", None)
        if isinstance(health, ServerHealth):
            return dataclasses.replace(stats, servers=health.snapshot())
        return stats

    def _clone(self) -> ClientT:
        master = self.master
        if master is None:
            raise PoolError("the pool has no master client; call fill(mc, n_slots)")
        client = master.clone()
        client._mcpool_behaviors = self._behaviors_version  # type: ignore[attr-defined]
        return client

    def _on_fork(self) -> None:
        # The master is the parent's too: it may hold a connection, and
        # freeing it in the child would send ``quit`` on the parent's socket.
        # Clone it (clones start unconnected) and keep the original alive.
        if self.master is not None:
            inherited = self.master
            abandon(inherited)
            self.master = inherited.clone()
