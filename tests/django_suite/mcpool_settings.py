"""Settings for Django's own test runner, run on Django's test suite.

Django's ``tests/test_sqlite.py`` with one memcached cache added: Django's
cache tests look for a ``CACHES`` entry whose ``BACKEND`` is exactly the
stock ``PyLibMCCache`` and take its ``LOCATION`` for their memcached tests.
tests/test_django_suite.py copies this file into the suite's ``tests/``
directory and names the server in ``MCPOOL_DJANGO_MEMCACHED``.
"""

import os

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
    },
    "other": {
        "ENGINE": "django.db.backends.sqlite3",
    },
}

SECRET_KEY = "django_tests_secret_key"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
]

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

USE_TZ = False

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.memcached.PyLibMCCache",
        "LOCATION": os.environ["MCPOOL_DJANGO_MEMCACHED"],
    },
}
