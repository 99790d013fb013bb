"""A one-module Django project for benchmarks/bench_django.py.

Settings, URLs and the view in one file: ``GET /?k=N`` does one cache
``get`` and one ``set`` of key ``kN`` and returns what the get found (or
``miss``). The cache's ``BACKEND`` comes from ``BENCH_CACHE_BACKEND``, its
server from ``BENCH_MEMCACHED``, mcpool's pool size from ``BENCH_POOL_SIZE``.
Served with ``DJANGO_SETTINGS_MODULE=django_bench_site``: by ``django-admin
runserver``, or by gunicorn as ``django.core.wsgi:get_wsgi_application()``.
"""

from __future__ import annotations

import os

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.urls import path

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = __name__
DATABASES: dict[str, object] = {}
BACKEND = os.environ.get("BENCH_CACHE_BACKEND", "mcpool.django.PyLibMCCache")
OPTIONS: dict[str, object] = {}
if BACKEND.startswith("mcpool."):
    OPTIONS = {
        "POOL": {"max_size": int(os.environ.get("BENCH_POOL_SIZE", "4"))},
        # libmemcached's own default, which the stock backend runs with: on a
        # loaded machine mcpool's 0.25 s would turn slow replies into misses.
        "server_timeout": 5.0,
    }
CACHES = {
    "default": {
        "BACKEND": BACKEND,
        "LOCATION": os.environ.get("BENCH_MEMCACHED", "127.0.0.1:11211"),
        "OPTIONS": OPTIONS,
    }
}


def get_and_set(request: HttpRequest) -> HttpResponse:
    n = int(request.GET.get("k", "0"))
    found = cache.get(f"k{n}")
    cache.set(f"k{n}", f"value-{n}")
    return HttpResponse(found or "miss", content_type="text/plain")


urlpatterns = [path("", get_and_set)]
