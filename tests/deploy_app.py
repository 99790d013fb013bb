"""The WSGI entry point the deployment tests serve: ``examples/flask_app``.

``application = create_app()``, configured from the environment
(``MCPOOL_SERVERS``, ``MCPOOL_POOL_SIZE``; see ``docs/flask.rst``), as a
``wsgi.py`` of a real project would be. With ``DEPLOY_USE_POOL_AT_IMPORT=1``
the app also makes a memcached call while this module is imported, so that a
server that imports the app before forking its workers (gunicorn
``--preload``, uWSGI without ``--lazy-apps``) hands them a pool with a live,
connected client in it: the case that breaks pools which are not fork-safe.
"""

from __future__ import annotations

import os

from examples.flask_app import GREETING_KEY, create_app, memcache

application = app = create_app()

if os.environ.get("DEPLOY_USE_POOL_AT_IMPORT") == "1":
    with app.app_context():
        memcache.client.get(GREETING_KEY)
