"""A Django project on mcpool: the cache framework on :mod:`mcpool.django`.

Routes (``urls.py``, ``views.py``):

- ``GET /`` — one cache ``get`` per request (and a ``set`` on the first
  request, when the greeting is missing): the route the deployment tests
  drive.
- ``GET /count/<path>`` — a per-path view counter (``add`` + ``incr``), keyed
  by :func:`mcpool.safe_key` of the path, never the raw path.
- ``GET /health`` — no cache at all.

``settings.py`` takes the memcached servers and pool size from the
environment (``MCPOOL_SERVERS=127.0.0.1:11211,...``, ``MCPOOL_POOL_SIZE=8``,
``MCPOOL_POOL_TIMEOUT``, ``MCPOOL_SERVER_TIMEOUT``); the default server is
127.0.0.1:11211.

Run it from the repository root (start a memcached first, for instance
``memcached -l 127.0.0.1 -p 11211 &``):

- gunicorn with threaded workers; give the pool as many clients as a worker
  has threads, so that no request waits for one::

      MCPOOL_POOL_SIZE=8 gunicorn -k gthread -w 2 --threads 8 \\
          -b 127.0.0.1:8000 examples.django_site.wsgi

- add ``--preload`` to import the project once in the arbiter and fork the
  workers from it: each worker's pool starts empty, and none touches a
  connection made before the fork.

- Django's development server, a thread per request::

      python -m django runserver --noreload \\
          --settings=examples.django_site.settings

Then ``curl http://127.0.0.1:8000/`` and ``python -m django mcpool ping
--settings=examples.django_site.settings`` (a project's ``manage.py`` does
the same).
"""
