"""Django's memcached cache tests, unchanged, on ``mcpool.django.PyLibMCCache``.

tests/test_django_suite.py copies this module into the ``cache`` test app
of Django's own test suite (from the sdist of the installed Django) and runs
it there with Django's ``runtests.py``. It subclasses Django's
``PyLibMCCacheTests``, so every test that class has and inherits runs as
Django wrote it, with only ``BACKEND`` switched.
"""

from cache import tests as django_cache_tests
from django.core.cache import caches
from django.test import override_settings

import mcpool.django

MCPOOL_PARAMS = {
    **django_cache_tests.PyLibMCCache_params,
    "BACKEND": "mcpool.django.PyLibMCCache",
}


def mcpool_caches(**params):
    """Django's test caches, as its memcached tests set them, on mcpool's backend."""
    return django_cache_tests.caches_setting_for_tests(
        base=MCPOOL_PARAMS,
        exclude=django_cache_tests.memcached_excluded_caches,
        **params,
    )


@override_settings(CACHES=mcpool_caches())
class McpoolPyLibMCCacheTests(django_cache_tests.PyLibMCCacheTests):
    base_params = MCPOOL_PARAMS

    # Django's class pins this test's caches to the stock BACKEND with an
    # override_settings on the method, which wins over the class's: the same
    # test function, with the same OPTIONS, on mcpool's backend.
    test_pylibmc_options = override_settings(
        CACHES=mcpool_caches(
            OPTIONS={
                "binary": True,
                "behaviors": {"tcp_nodelay": True},
            },
        )
    )(django_cache_tests.PyLibMCCacheTests.test_pylibmc_options.__wrapped__)

    def test_runs_on_mcpool_backend(self):
        self.assertIs(type(caches["default"]), mcpool.django.PyLibMCCache)
