"""Settings of the example project: a cache on mcpool, no database.

The memcached servers and the pool's limits come from the environment, with
the names the Flask example uses, so one deployment set-up serves both.
"""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

# "mcpool" for the management command: python manage.py mcpool stats|ping
INSTALLED_APPS = ["mcpool"]
# A full line for a cache client (MCPOOL_MAX_WAITING) answers 503, not 500.
MIDDLEWARE = ["examples.django_site.middleware.CacheOverload"]
ROOT_URLCONF = "examples.django_site.urls"
WSGI_APPLICATION = "examples.django_site.wsgi.application"
DATABASES: dict[str, Any] = {}
USE_TZ = True

CACHES = {
    "default": {
        "BACKEND": "mcpool.django.PyLibMCCache",
        # Django's LOCATION: one server, a list, or servers split by , or ;
        "LOCATION": os.environ.get("MCPOOL_SERVERS", "127.0.0.1:11211"),
        "KEY_PREFIX": "django_site",
        "OPTIONS": {
            # Seconds a server may take to connect or answer; past it, a
            # read is a miss and a write raises mcpool.ServerUnavailable.
            "server_timeout": float(os.environ.get("MCPOOL_SERVER_TIMEOUT", "0.25")),
            "POOL": {
                # At most this many connections per server, per process.
                "max_size": int(os.environ.get("MCPOOL_POOL_SIZE", "8")),
                # Seconds a cache call waits for a free client.
                "timeout": float(os.environ.get("MCPOOL_POOL_TIMEOUT", "2.0")),
                # Cache calls that may wait at once; one more is refused.
                "max_waiting": (
                    int(os.environ["MCPOOL_MAX_WAITING"])
                    if "MCPOOL_MAX_WAITING" in os.environ
                    else None
                ),
            },
        },
    }
}
