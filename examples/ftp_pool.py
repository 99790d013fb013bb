"""100 concurrent FTP downloads through a pool of three connections.

An FTP server lets each user hold only a few connections at once, and an
``ftplib.FTP`` object must not be used by two threads at a time: the same
two constraints as a memcached client, so the same :class:`mcpool.Pool`
serves them. Run it from the repository root::

    .venv/bin/python examples/ftp_pool.py [--downloads 100] [--pool-size 3]

It starts a pyftpdlib server on a free loopback port that allows each user
``--user-limit`` sessions (3 by default) and drops sessions idle for
``--server-idle`` seconds, writes files of random bytes, and then:

1. opens a connection per download from 20 threads at once: every login
   past the limit is refused with ``421``, which is why a pool is needed;
2. makes ``--downloads`` downloads at once from as many threads through a
   pool of ``--pool-size`` connections, and checks each file's SHA-256;
3. waits until the server has dropped the idle pooled connections, then
   downloads again: the pool's ``check`` hook (``NOOP``, only for
   connections idle long enough to have been dropped) finds the dead ones
   and the pool replaces them;
4. asks for a missing file: the ``550`` is the caller's problem, not the
   connection's, so the connection goes back to the pool;
5. closes the pool: its ``close`` hook says ``QUIT`` on every connection.

It exits with status 0 when every check held.
"""

from __future__ import annotations

import argparse
import collections
import ftplib
import hashlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

from mcpool import Pool

USER, PASSWORD = "reader", "secret"


# -- the server side: pyftpdlib with a per-user session limit ---------------


class LimitedFTPHandler(FTPHandler):  # type: ignore[misc]
    """Refuses a login while the user already holds *max_sessions_per_user*.

    pyftpdlib runs every handler in its one I/O thread, so the shared counter
    needs no lock.
    """

    max_sessions_per_user = 3
    sessions: collections.Counter[str] = collections.Counter()

    def handle_auth_success(self, home: str, password: str, msg_login: str) -> None:
        limit = self.max_sessions_per_user
        if self.sessions[self.username] >= limit:
            self.respond(
                f"421 Too many sessions for {self.username} (at most {limit})."
            )
            self.close_when_done()
            return
        self.sessions[self.username] += 1
        self.counted_user = self.username
        super().handle_auth_success(home, password, msg_login)

    def on_disconnect(self) -> None:
        user = getattr(self, "counted_user", None)
        if user is not None:
            self.sessions[user] -= 1
            self.counted_user = None


@contextmanager
def ftp_server(
    root: str, user_limit: int, idle_timeout: float
) -> Iterator[tuple[tuple[str, int], collections.Counter[str]]]:
    """Serve *root* on a free loopback port in a thread.

    Yields the address and the server's live count of sessions per user.
    """
    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, PASSWORD, root, perm="elr")
    sessions: collections.Counter[str] = collections.Counter()
    handler = type(
        "Handler",
        (LimitedFTPHandler,),
        {
            "authorizer": authorizer,
            "max_sessions_per_user": user_limit,
            "sessions": sessions,
            "timeout": idle_timeout,
        },
    )
    server = FTPServer(("127.0.0.1", 0), handler)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        server.close_all()

    thread = threading.Thread(target=serve, name="ftp-server")
    thread.start()
    try:
        yield (server.address[0], server.address[1]), sessions
    finally:
        stop.set()
        thread.join()


# -- the client side: a pool of ftplib.FTP connections ----------------------


class PooledFTP(ftplib.FTP):
    """An ``ftplib.FTP`` that remembers when it was last given back."""

    last_used = 0.0


def make_pool(
    address: tuple[str, int], size: int, check_after: float
) -> Pool[PooledFTP]:
    """A pool of logged-in FTP connections to *address*.

    - ``check``: a connection that sat idle for *check_after* seconds or more
      may have been dropped by the server's idle timeout, so it must answer a
      ``NOOP`` before it is handed out. A connection used a moment ago is
      handed out unchecked: a round trip per download would buy nothing.
    - ``reset``: stamps the time a connection came back, for ``check``.
    - ``discard_on``: a permanent error (``550 No such file``) says nothing
      about the connection, which goes back to the pool; anything else
      (``421``, a reset socket, a protocol error) may have left it in the
      middle of a reply, so it is closed and replaced.
    - ``close``: says ``QUIT`` politely, and just closes the socket of a
      connection the server has dropped already.
    """

    def connect() -> PooledFTP:
        ftp = PooledFTP()
        ftp.connect(*address, timeout=10)
        try:
            ftp.login(USER, PASSWORD)
        except BaseException:
            ftp.close()
            raise
        return ftp

    def still_connected(ftp: PooledFTP) -> bool:
        if time.monotonic() - ftp.last_used < check_after:
            return True
        try:
            ftp.voidcmd("NOOP")
        except (OSError, EOFError, ftplib.Error) as exc:
            print(f"  check: a pooled connection was dropped ({exc}); replacing it")
            return False
        return True

    def stamp(ftp: PooledFTP) -> None:
        ftp.last_used = time.monotonic()

    def quit_politely(ftp: PooledFTP) -> None:
        try:
            ftp.quit()
        except (OSError, EOFError, ftplib.Error):
            ftp.close()

    def connection_broken(exc: BaseException) -> bool:
        return not isinstance(exc, ftplib.error_perm)

    return Pool(
        connect,
        max_size=size,
        timeout=30.0,
        check=still_connected,
        reset=stamp,
        close=quit_politely,
        discard_on=connection_broken,
        name="ftp",
    )


def download(ftp: ftplib.FTP, name: str) -> str:
    """RETR *name*; return the SHA-256 of what arrived."""
    digest = hashlib.sha256()
    ftp.retrbinary(f"RETR {name}", digest.update)
    return digest.hexdigest()


# -- the demonstration ------------------------------------------------------


def write_files(root: str, count: int) -> dict[str, str]:
    """Files of random bytes (1 KiB to ~320 KiB); return name -> SHA-256."""
    checksums = {}
    for n in range(count):
        data = os.urandom(1024 + n * 16_411)
        name = f"file{n:02}.bin"
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        checksums[name] = hashlib.sha256(data).hexdigest()
    return checksums


def without_a_pool(address: tuple[str, int], clients: int) -> collections.Counter[str]:
    """*clients* threads log in at once, each on its own connection."""
    outcomes: collections.Counter[str] = collections.Counter()
    all_tried = threading.Barrier(clients)
    lock = threading.Lock()

    def client() -> None:
        ftp = ftplib.FTP()
        try:
            ftp.connect(*address, timeout=10)
            ftp.login(USER, PASSWORD)
            outcome = "logged in"
        except ftplib.error_temp as exc:
            outcome = str(exc)
        with lock:
            outcomes[outcome] += 1
        all_tried.wait(timeout=30)  # hold the session until everyone tried
        ftp.close()

    with ThreadPoolExecutor(clients) as executor:
        for future in [executor.submit(client) for _ in range(clients)]:
            future.result()
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--downloads", type=int, default=100)
    parser.add_argument("--pool-size", type=int, default=3)
    parser.add_argument("--user-limit", type=int, default=3)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument(
        "--server-idle",
        type=float,
        default=1.0,
        help="seconds after which the server drops an idle session",
    )
    args = parser.parse_args(argv)
    if args.pool_size > args.user_limit:
        parser.error("--pool-size must not exceed --user-limit: logins would fail")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("pyftpdlib").setLevel(logging.ERROR)
    failures: list[str] = []

    def expect(ok: bool, what: str) -> None:
        print(("  ok   " if ok else "  FAIL ") + what)
        if not ok:
            failures.append(what)

    with tempfile.TemporaryDirectory() as root:
        checksums = write_files(root, args.files)
        names = sorted(checksums)
        server = ftp_server(root, args.user_limit, args.server_idle)
        with server as (address, handler_sessions):
            print(
                f"FTP server on {address[0]}:{address[1]}, "
                f"{args.user_limit} sessions per user, "
                f"idle sessions dropped after {args.server_idle:g} s"
            )

            print("\n1. a connection per download, 20 at once")
            outcomes = without_a_pool(address, 20)
            for outcome, count in sorted(outcomes.items()):
                print(f"  {count:3} x {outcome}")
            expect(
                outcomes["logged in"] == args.user_limit,
                f"only {args.user_limit} of 20 could log in",
            )
            expect(
                _wait_until(lambda: handler_sessions[USER] == 0),
                "the server saw every session end",
            )

            pool = make_pool(address, args.pool_size, check_after=args.server_idle / 2)

            def pooled_download(name: str) -> str:
                with pool.reserve() as ftp:
                    return download(ftp, name)

            print(
                f"\n2. {args.downloads} downloads at once, "
                f"pool of {args.pool_size} connections"
            )
            wanted = [names[n % len(names)] for n in range(args.downloads)]
            started = time.monotonic()
            with ThreadPoolExecutor(args.downloads) as executor:
                digests = list(executor.map(pooled_download, wanted))
            elapsed = time.monotonic() - started
            verified = sum(
                checksums[n] == d for n, d in zip(wanted, digests, strict=True)
            )
            stats = pool.stats()
            print(
                f"  {elapsed:.2f} s; {stats.created} connections made, "
                f"{stats.waits} downloads waited for one "
                f"(longest {stats.max_wait * 1000:.0f} ms)"
            )
            expect(
                verified == args.downloads,
                f"{verified} of {args.downloads} files verified by SHA-256",
            )
            expect(
                stats.created <= args.pool_size,
                f"at most {args.pool_size} connections ({stats.created})",
            )

            print(f"\n3. idle past the server's {args.server_idle:g} s timeout")
            expect(
                _wait_until(
                    lambda: handler_sessions[USER] == 0, timeout=args.server_idle * 10
                ),
                "the server dropped the idle pooled sessions",
            )
            before = pool.stats()
            # Hold every pooled connection at once, so that each one is
            # checked (the pool reuses the most recently returned first).
            everyone_has_one = threading.Barrier(args.pool_size)

            def download_together(name: str) -> str:
                with pool.reserve() as ftp:
                    everyone_has_one.wait(timeout=30)
                    return download(ftp, name)

            wanted = names[: args.pool_size]
            with ThreadPoolExecutor(args.pool_size) as executor:
                digests = list(executor.map(download_together, wanted))
            after = pool.stats()
            dropped = after.discarded - before.discarded
            print(
                f"  NOOP found {dropped} dropped connections; "
                f"{after.created - before.created} new ones made"
            )
            expect(dropped == before.idle, "every dropped connection was replaced")
            expect(
                digests == [checksums[n] for n in wanted],
                f"{len(wanted)} more files verified",
            )

            print("\n4. a missing file")
            try:
                with pool.reserve() as ftp:
                    failed_on = ftp
                    download(ftp, "no-such-file.bin")
                expect(False, "the missing file raised")
            except ftplib.error_perm as exc:
                print(f"  ftplib.error_perm: {exc}")
            # The pool hands out the most recently returned connection first.
            with pool.reserve() as ftp:
                expect(ftp is failed_on, "the connection went back to the pool")
                expect(
                    download(ftp, names[0]) == checksums[names[0]],
                    "the next download on it is fine",
                )

            print("\n5. closing the pool")
            pool.close()
            expect(
                _wait_until(lambda: handler_sessions[USER] == 0),
                "QUIT ended every session on the server",
            )
            expect(pool.stats().size == 0, "the pool holds nothing")

    print("\nall checks passed" if not failures else f"\n{len(failures)} FAILED")
    return 0 if not failures else 1


def _wait_until(condition: Any, timeout: float = 10.0) -> bool:
    """Poll the server thread's counter until *condition* holds or *timeout*."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


if __name__ == "__main__":
    sys.exit(main())
