"""A first end-to-end check: a ClientPool against a real memcached."""

from __future__ import annotations

import pylibmc

from mcpool import ClientPool


def test_reserve_sets_and_gets_through_a_clone(master: pylibmc.Client) -> None:
    pool = ClientPool(master, 2)
    with pool.reserve() as mc:
        assert mc is not master
        assert mc.set("smoke:key", "value")
        assert mc.get("smoke:key") == "value"
    stats = pool.stats()
    assert (stats.created, stats.idle, stats.in_use) == (1, 1, 0)
