"""A pool of DBAPI connections: sqlite3 by default, PostgreSQL with a DSN.

A DBAPI connection is not to be shared by two threads at once, and a
database server allows only so many of them: the same constraints as a
memcached client, so the same :class:`mcpool.Pool` serves them. Run it from
the repository root::

    .venv/bin/python examples/dbapi_pool.py                # sqlite3, no server
    .venv/bin/python examples/dbapi_pool.py --dsn postgresql://user@127.0.0.1/db

(PostgreSQL needs ``pip install psycopg``; the example imports it only when
a DSN is given.) It shows:

1. 8 threads making 400 transfers between accounts through a pool of 4
   connections; the total balance is the same afterwards;
2. the ``reset`` hook: a caller that returns a connection with its
   transaction still open (it forgot to commit, or raised halfway) leaves
   nothing behind, because returning rolls back; without that, the next
   caller would commit the half-done work, and with sqlite3 every other
   connection would wait on the open transaction's lock;
3. exhaustion: with every connection held, ``reserve()`` waits a bounded
   time and then raises :class:`mcpool.PoolTimeout`, whose message gives
   the pool's state and who holds the connections. That replaces the usual
   "sleep and try again until a connection comes" loop, which waits
   unbounded, serves nobody in order, and says nothing when it gives up;
4. a caller's SQL error (a constraint, a typo) keeps the connection, while
   an error that means the connection is broken replaces it.

About ``check_same_thread=False``: by default :mod:`sqlite3` raises
``ProgrammingError`` when a connection is used by any thread other than the
one that made it. A pooled connection is made by whichever thread first
needed one and then reserved by others, so it moves between threads. That is
safe because the pool hands a connection to one thread at a time, with the
hand-off ordered by the pool's lock: the guarantee the check approximates.
The example shows the error the default would give.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

from mcpool import Pool, PoolTimeout

ACCOUNTS = 10
OPENING_BALANCE = 1000


class Database:
    """How to connect to one database, and its DBAPI module's dialect."""

    def __init__(self, module: ModuleType, connect: Callable[[], Any], name: str):
        self.module = module
        self.connect = connect
        self.name = name
        # Placeholders differ between drivers: qmark (sqlite3) or format.
        self.mark = "?" if module.paramstyle == "qmark" else "%s"

    def sql(self, statement: str) -> str:
        return statement.replace("?", self.mark)


def sqlite_database(path: str) -> Database:
    def connect() -> sqlite3.Connection:
        # check_same_thread=False: the pool moves the connection between
        # threads, one at a time (see the module docstring).
        # timeout: how long a writer waits for another's lock.
        conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
        # Write-ahead logging: readers do not block the writer, and a commit
        # needs no fsync of its own (the example's data is throwaway).
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return Database(sqlite3, connect, f"sqlite3 {path}")


def postgresql_database(dsn: str) -> Database:
    try:
        import psycopg
    except ImportError:
        sys.exit("a DSN needs psycopg: pip install 'psycopg[binary]'")

    def connect() -> Any:
        return psycopg.connect(dsn)

    return Database(psycopg, connect, "PostgreSQL")


def make_pool(db: Database, size: int) -> Pool[Any]:
    """A pool of at most *size* connections to *db*.

    - ``reset`` rolls back whatever the caller left open; if the rollback
      fails the connection is broken and the pool closes it.
    - ``discard_on`` replaces the connection only for the errors DBAPI
      reserves for a connection or server in trouble (``InterfaceError``,
      ``OperationalError``); a constraint or syntax error is the caller's,
      and the rollback on return cleans up after it.
    - ``timeout`` bounds every wait for a connection; ``leak_timeout`` makes
      a timeout error name the threads holding the connections.
    """
    broken = (db.module.InterfaceError, db.module.OperationalError)

    def connection_broken(exc: BaseException) -> bool:
        return isinstance(exc, broken)

    def rollback(conn: Any) -> None:
        conn.rollback()

    def close(conn: Any) -> None:
        conn.close()

    return Pool(
        db.connect,
        max_size=size,
        timeout=5.0,
        reset=rollback,
        close=close,
        discard_on=connection_broken,
        leak_timeout=60.0,
        name="dbapi",
    )


def create_schema(pool: Pool[Any], db: Database) -> None:
    with pool.reserve() as conn:
        cur = conn.cursor()
        cur.execute("DROP TABLE IF EXISTS accounts")
        cur.execute(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, "
            "balance INTEGER NOT NULL CHECK (balance >= 0))"
        )
        for n in range(ACCOUNTS):
            cur.execute(
                db.sql("INSERT INTO accounts (id, balance) VALUES (?, ?)"),
                (n, OPENING_BALANCE),
            )
        conn.commit()


def total_balance(pool: Pool[Any]) -> int:
    with pool.reserve() as conn:
        cur = conn.cursor()
        cur.execute("SELECT SUM(balance) FROM accounts")
        total: int = cur.fetchone()[0]
        return total


def transfer(
    pool: Pool[Any], db: Database, source: int, target: int, amount: int
) -> None:
    """Move *amount* from *source* to *target* in one transaction."""
    with pool.reserve() as conn:
        cur = conn.cursor()
        # Update in id order so that two opposite transfers cannot deadlock.
        for account, delta in sorted([(source, -amount), (target, amount)]):
            cur.execute(
                db.sql("UPDATE accounts SET balance = balance + ? WHERE id = ?"),
                (delta, account),
            )
        conn.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="a PostgreSQL DSN; sqlite3 when omitted")
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--transfers", type=int, default=400)
    args = parser.parse_args(argv)
    show_pool_log()
    failures: list[str] = []

    def expect(ok: bool, what: str) -> None:
        print(("  ok   " if ok else "  FAIL ") + what)
        if not ok:
            failures.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        if args.dsn:
            db = postgresql_database(args.dsn)
        else:
            db = sqlite_database(os.path.join(tmp, "bank.sqlite3"))
            show_same_thread_check(db)
        pool = make_pool(db, args.pool_size)
        create_schema(pool, db)
        opening = total_balance(pool)

        print(
            f"\n1. {args.transfers} transfers from {args.threads} threads, "
            f"pool of {args.pool_size} connections to {db.name}"
        )
        rng = random.Random(42)
        moves = [
            (*rng.sample(range(ACCOUNTS), 2), rng.randint(1, 20))
            for _ in range(args.transfers)
        ]
        started = time.monotonic()
        with ThreadPoolExecutor(args.threads) as executor:
            for future in [executor.submit(transfer, pool, db, *m) for m in moves]:
                future.result()
        stats = pool.stats()
        print(
            f"  {time.monotonic() - started:.2f} s; {stats.created} connections "
            f"made, {stats.waits} transfers waited for one "
            f"(longest {stats.max_wait * 1000:.0f} ms)"
        )
        expect(total_balance(pool) == opening, f"the total is still {opening}")
        expect(stats.created <= args.pool_size, f"at most {args.pool_size} connections")

        print("\n2. a connection returned with its transaction open")
        with pool.reserve() as conn:
            cur = conn.cursor()
            cur.execute(db.sql("UPDATE accounts SET balance = 0 WHERE id = ?"), (0,))
            # ...and no commit: returning it rolls back.
        with pool.reserve() as conn:
            cur = conn.cursor()
            cur.execute(db.sql("SELECT balance FROM accounts WHERE id = ?"), (0,))
            balance = cur.fetchone()[0]
        expect(balance != 0, "the uncommitted update was rolled back on return")
        try:
            with pool.reserve() as conn:
                transfer_halfway(conn, db)
        except RuntimeError as exc:
            print(f"  the caller raised: {exc}")
        expect(total_balance(pool) == opening, "the half-done transfer left nothing")
        # No connection came back holding a transaction, so none holds a
        # lock: each of them can write, one after the other, at once.
        leases = [pool.checkout() for _ in range(args.pool_size)]
        written = 0
        for n, lease in enumerate(leases):
            try:
                cur = lease.item.cursor()
                cur.execute(
                    db.sql("UPDATE accounts SET balance = balance WHERE id = ?"), (n,)
                )
                lease.item.commit()
                written += 1
            except db.module.OperationalError as exc:  # "database is locked"
                print(f"  {type(exc).__name__}: {exc}")
        for lease in leases:
            lease.release()
        expect(
            written == args.pool_size,
            f"{written} of {args.pool_size} connections could write afterwards",
        )

        print("\n3. exhaustion: every connection held, a bounded wait")
        held = [pool.checkout() for _ in range(args.pool_size)]
        started = time.monotonic()
        try:
            with pool.reserve(timeout=0.5):
                pass
            expect(False, "reserve() raised PoolTimeout")
        except PoolTimeout as exc:
            waited = time.monotonic() - started
            print(f"  PoolTimeout after {waited:.2f} s:\n    {exc}")
            expect(0.4 <= waited < 5, "it waited about the timeout, then gave up")
        got_one = threading.Event()

        def wait_for_one() -> None:
            with pool.reserve(timeout=10):
                got_one.set()

        waiter = threading.Thread(target=wait_for_one)
        waiter.start()
        held.pop().release()
        waiter.join()
        expect(got_one.is_set(), "a released connection went to the waiting caller")
        for lease in held:
            lease.release()

        print("\n4. errors: the caller's, and the connection's")
        before = pool.stats()
        try:
            with pool.reserve() as conn:
                conn.cursor().execute(
                    db.sql("UPDATE accounts SET balance = -1 WHERE id = ?"), (1,)
                )
        except db.module.IntegrityError as exc:
            print(f"  IntegrityError: {exc}".splitlines()[0])
        expect(
            pool.stats().discarded == before.discarded,
            "a constraint violation keeps the connection",
        )
        try:
            with pool.reserve() as conn:
                conn.close()  # as a server restart or a network cut would
                conn.cursor().execute("SELECT 1")
        except db.module.Error as exc:
            # sqlite3 says ProgrammingError, psycopg OperationalError; either
            # way the rollback on return fails and the pool drops it.
            print(f"  {type(exc).__name__}: {exc}")
        after = pool.stats()
        expect(
            after.discarded == before.discarded + 1, "a closed connection is replaced"
        )
        expect(total_balance(pool) == opening, "the next caller is served")
        pool.close()

    print("\nall checks passed" if not failures else f"\n{len(failures)} FAILED")
    return 0 if not failures else 1


class _MessageOnly(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"  log: {record.levelname} {record.getMessage()}"


def show_pool_log() -> None:
    """Print the pool's log lines among the output, without tracebacks."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_MessageOnly())
    logger = logging.getLogger("mcpool")
    logger.addHandler(handler)
    logger.propagate = False


def transfer_halfway(conn: Any, db: Database) -> None:
    cur = conn.cursor()
    cur.execute(
        db.sql("UPDATE accounts SET balance = balance - 500 WHERE id = ?"), (2,)
    )
    raise RuntimeError("crashed before crediting account 3")


def show_same_thread_check(db: Database) -> None:
    """What sqlite3's default check_same_thread=True says to a pool."""
    conn = sqlite3.connect(db.name.split(" ", 1)[1])  # made in this thread
    errors: list[Exception] = []

    def use_elsewhere() -> None:
        try:
            conn.execute("SELECT 1")
        except sqlite3.ProgrammingError as exc:
            errors.append(exc)

    thread = threading.Thread(target=use_elsewhere)
    thread.start()
    thread.join()
    conn.close()
    print("0. sqlite3's default, check_same_thread=True, in another thread:")
    print(f"  ProgrammingError: {errors[0]}" if errors else "  (no error)")
    print("  so the pool's connections are made with check_same_thread=False")


if __name__ == "__main__":
    sys.exit(main())
