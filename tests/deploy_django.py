"""The Django entry point the deployment tests serve with ``--preload``.

``examples/django_site``'s WSGI application, as its ``wsgi.py`` makes it;
with ``DEPLOY_USE_POOL_AT_IMPORT=1`` it also reads the cache while this
module is imported, so that gunicorn ``--preload`` forks its workers from a
process whose pool holds a live, connected client: the case that breaks
pools which are not fork-safe.
"""

from __future__ import annotations

import os

from django.core.cache import cache

from examples.django_site.views import GREETING_KEY
from examples.django_site.wsgi import application

__all__ = ["application"]

if os.environ.get("DEPLOY_USE_POOL_AT_IMPORT") == "1":
    cache.get(GREETING_KEY)
