"""The example project's views: Django's cache API, nothing mcpool-specific."""

from __future__ import annotations

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

from mcpool import safe_key

#: The key ``GET /`` reads.
GREETING_KEY = "greeting"
GREETING = "hello from memcached"


def index(request: HttpRequest) -> HttpResponse:
    greeting = cache.get(GREETING_KEY)
    if greeting is None:  # the first request after a (re)start only
        greeting = GREETING
        cache.set(GREETING_KEY, greeting, timeout=None)
    return HttpResponse(greeting, content_type="text/plain")


def count(request: HttpRequest, name: str) -> HttpResponse:
    # Any text may come in the URL; Django refuses keys with spaces or
    # control characters, and safe_key maps any text to a valid key.
    key = safe_key(name, prefix="count:", max_length=200)
    cache.add(key, 0, timeout=None)
    return HttpResponse(f"{name}: {cache.incr(key)}\n", content_type="text/plain")


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")
