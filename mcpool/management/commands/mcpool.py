"""``python manage.py mcpool stats|ping``: the caches' pools and servers.

Needs ``"mcpool"`` in ``INSTALLED_APPS``. Each cache alias whose backend is
:class:`mcpool.django.PyLibMCCache` is reported (or the one named with
``--cache``): ``stats`` shows its pool's counters and each memcached
server's statistics; ``ping`` asks each server for its statistics and shows
how long it took. Both exit with status 1 if a server does not answer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mcpool.django import PyLibMCCache
from mcpool.servers import ask_each_server, server_stat_lines


class Command(BaseCommand):  # type: ignore[misc]
    help = "Inspect the memcached pools and servers of the mcpool caches."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "action",
            choices=["stats", "ping"],
            help="stats: pool counters and server statistics; ping: does "
            "each server answer, and how fast",
        )
        parser.add_argument(
            "--cache",
            dest="alias",
            help="the CACHES alias to report (default: every mcpool cache)",
        )
        parser.add_argument(
            "--all",
            dest="show_all",
            action="store_true",
            help="stats: every server statistic, not only the main ones",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backends = _mcpool_caches(options["alias"])
        failed = 0
        servers = 0
        for alias, backend in backends:
            servers += len(backend.client_servers)
            if options["action"] == "stats":
                failed += self._stats(alias, backend, options["show_all"])
            else:
                failed += self._ping(alias, backend)
        if failed:
            raise CommandError(f"{failed} of {servers} servers did not answer")

    def _stats(self, alias: str, backend: PyLibMCCache, show_all: bool) -> int:
        pool = backend.pool
        self.stdout.write(f"cache {alias!r}: {type(pool).__name__} {pool.name!r}")
        for name, value in dataclasses.asdict(pool.stats()).items():
            self.stdout.write(f"  {name}: {value}")
        failed = 0
        for server, _, answer in ask_each_server(
            backend.client_servers, backend.make_client
        ):
            self.stdout.write(f"server {server}:")
            if isinstance(answer, Exception):
                failed += 1
                self.stdout.write(f"  error: {answer}")
                continue
            for line in server_stat_lines(answer, show_all):
                self.stdout.write(line)
        return failed

    def _ping(self, alias: str, backend: PyLibMCCache) -> int:
        failed = 0
        for server, elapsed, answer in ask_each_server(
            backend.client_servers, backend.make_client
        ):
            if isinstance(answer, Exception):
                failed += 1
                self.stdout.write(f"{alias}  {server}  FAILED  {answer}")
            else:
                self.stdout.write(f"{alias}  {server}  ok  {elapsed * 1000:.2f} ms")
        return failed


def _mcpool_caches(alias: str | None) -> list[tuple[str, PyLibMCCache]]:
    aliases = list(settings.CACHES) if alias is None else [alias]
    if alias is not None and alias not in settings.CACHES:
        raise CommandError(
            f"no cache {alias!r} in CACHES; "
            f"the aliases are {', '.join(settings.CACHES)}"
        )
    found = [(name, caches[name]) for name in aliases]
    mine = [
        (name, backend) for name, backend in found if isinstance(backend, PyLibMCCache)
    ]
    if mine:
        return mine
    if alias is None:
        raise CommandError(
            "no cache in CACHES uses mcpool: set a BACKEND to "
            "'mcpool.django.PyLibMCCache'"
        )
    raise CommandError(
        f"the cache {alias!r} does not use mcpool (its BACKEND is "
        f"{settings.CACHES[alias].get('BACKEND')!r}); set it to "
        "'mcpool.django.PyLibMCCache'"
    )
