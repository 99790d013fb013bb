"""A fork that skips the at-fork hooks (uWSGI's default) is handled once, even
when several threads of the child notice it at the same moment."""

from __future__ import annotations

import threading
import time

from mcpool import Pool


class SlowToReset(Pool[object]):
    """Widens the window between noticing the fork and resetting the state."""

    resets = 0

    def _on_fork(self) -> None:
        type(self).resets += 1
        time.sleep(0.01)


def test_threads_that_notice_an_unhooked_fork_together_reset_the_pool_once() -> None:
    pool = SlowToReset(object, 4)
    generation = pool._generation
    # What a fork without the at-fork hooks leaves: the marker page reads 0.
    pool._fork_marker[0] = 0
    start = threading.Barrier(8)
    made: list[object] = []
    lock = threading.Lock()

    def reserve_once() -> None:
        start.wait()
        with pool.reserve() as item:
            with lock:
                made.append(item)
            time.sleep(0.001)

    threads = [threading.Thread(target=reserve_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert SlowToReset.resets == 1
    assert pool._generation == generation + 1
    stats = pool.stats()
    # Every item made after the fork is accounted for in the pool: none was
    # orphaned by a second reset.
    assert stats.created == len({id(item) for item in made}) == stats.size
    assert (stats.in_use, stats.reserves) == (0, 8)
    with pool.reserve():  # and the pool works on
        pass
