"""Django management commands of mcpool (with ``"mcpool"`` in ``INSTALLED_APPS``)."""
