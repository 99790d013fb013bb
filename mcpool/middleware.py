"""WSGI middleware that gives each request a pooled client, held until the
server closes the response.

.. code-block:: python

    from mcpool import Client, ClientPool, PoolMiddleware

    pool = ClientPool(Client(["127.0.0.1:11211"]), 8)

    def app(environ, start_response):
        mc = environ["mcpool.client"]    # nothing reserved yet
        mc.add("hits", 0)                # the first use reserves a client
        hits = mc.incr("hits")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{hits} hits".encode()]

    app = PoolMiddleware(app, pool)

The client is reserved on first use, so a request that never touches
memcached holds nothing, and goes back to the pool when the server calls
``close()`` on the response iterable, as PEP 3333 requires it to do after the
last byte is sent. Releasing when the application *returns* would be wrong: a
streaming body still runs after that, and the client would already be serving
another request. The release also happens, exactly once, when the application
raises, when iterating the body raises, when the client disconnects early (the
server stops iterating and calls ``close()``), and when the application's own
``close()`` raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["PoolMiddleware", "RequestClient", "ReservingPool"]


class ReservingPool(Protocol):
    """What the middleware needs of a pool: ``reserve()`` returning a context
    manager whose ``__enter__`` gives the client and whose ``__exit__`` gives
    it back.

    :class:`~mcpool.ClientPool`, :class:`~mcpool.Pool`,
    :class:`~mcpool.ThreadMappedPool` and ``pylibmc.ClientPool`` all qualify.
    """

    def reserve(self) -> AbstractContextManager[Any]: ...


_UNUSED, _RESERVED, _RELEASED = 0, 1, 2

#: The client methods :class:`RequestClient` defines itself, rather than
#: finding them through ``__getattr__``: a lookup that misses costs an
#: AttributeError raised and caught, 0.45 us a call more than a method.
FORWARDED_METHODS = (
    "add",
    "add_multi",
    "append",
    "cas",
    "decr",
    "delete",
    "delete_multi",
    "get",
    "get_multi",
    "gets",
    "incr",
    "incr_multi",
    "prepend",
    "replace",
    "set",
    "set_multi",
    "touch",
)


class RequestClient:
    """One request's client: reserved from *pool* on first use, released once.

    Attribute access and ``mc[key]`` go to the reserved client, so the object
    can be used in place of a ``pylibmc.Client``:

    >>> mc = environ["mcpool.client"]  # doctest: +SKIP
    >>> mc.set("k", "v")  # the first use reserves a client
    True

    After :meth:`release`, using it raises :class:`RuntimeError` instead of
    touching a client that may already serve another request. It belongs to
    one request and is not meant to be shared between threads.

    :param pool: any pool with ``reserve()`` (see :class:`ReservingPool`).
    """

    __slots__ = ("pool", "_reservation", "_client", "_state")

    def __init__(self, pool: ReservingPool) -> None:
        self.pool = pool
        self._reservation: AbstractContextManager[Any] | None = None
        self._client: Any = None
        self._state = _UNUSED

    @property
    def client(self) -> Any:
        """The reserved client, reserving it now if this is the first use.

        :raises mcpool.PoolTimeout: no client became free within the pool's
            timeout.
        :raises RuntimeError: the request is over and the client was released.
        """
        client = self._client
        if client is None:
            client = self._reserve()
        return client

    @property
    def reserved(self) -> bool:
        """True while a client is reserved for this request."""
        return self._state == _RESERVED

    @property
    def released(self) -> bool:
        """True once :meth:`release` was called, whether or not a client was
        ever reserved."""
        return self._state == _RELEASED

    def _reserve(self) -> Any:
        if self._state == _RELEASED:
            raise RuntimeError(
                "this request's memcached client was already released (the "
                "response was closed or the context torn down); a streaming "
                "body must not outlive the request: wrap the generator in "
                "flask.stream_with_context or serve through mcpool.PoolMiddleware"
            )
        reservation = self.pool.reserve()
        self._client = reservation.__enter__()
        self._reservation = reservation
        self._state = _RESERVED
        return self._client

    def release(self, exc: BaseException | None = None) -> None:
        """Return the client to the pool if one was reserved; later uses raise.

        Idempotent: only the first call does anything.

        :param exc: the exception that ended the request, if any; the pool's
            ``discard_on`` decides whether it means the client is broken.
        """
        if self._state == _RELEASED:
            return
        self._state = _RELEASED
        reservation = self._reservation
        self._reservation = None
        self._client = None
        if reservation is None:
            return
        if exc is None:
            reservation.__exit__(None, None, None)
        else:
            reservation.__exit__(type(exc), exc, exc.__traceback__)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this class does not define: the client's.
        # Private names stay here, so that copy/pickle probing an object
        # made without __init__ gets an AttributeError, not a recursion.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.client, name)

    def __getitem__(self, key: Any) -> Any:
        return self.client[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.client[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.client[key]

    def __contains__(self, key: Any) -> bool:
        return key in self.client

    def __repr__(self) -> str:
        state = ("unused", "reserved", "released")[self._state]
        return f"<RequestClient {state} from {self.pool!r}>"


def _forward(name: str) -> Callable[..., Any]:
    def method(self: RequestClient, *args: Any, **kwargs: Any) -> Any:
        client = self._client
        if client is None:
            client = self._reserve()
        return getattr(client, name)(*args, **kwargs)

    method.__name__ = name
    method.__qualname__ = f"RequestClient.{name}"
    method.__doc__ = f"The client's ``{name}()``, reserving the client first if needed."
    return method


for _name in FORWARDED_METHODS:
    setattr(RequestClient, _name, _forward(_name))
del _name


class _ClosingResponse:
    """The application's response iterable, releasing the request's client
    after its own ``close()``.

    A class rather than a generator: a wrapping generator closed early gets
    ``GeneratorExit`` at its ``yield``, and code there that catches too much
    swallows it or skips the release.
    """

    __slots__ = ("_response", "_iterator", "_request_client")

    def __init__(
        self, response: Iterable[bytes], request_client: RequestClient
    ) -> None:
        self._response = response
        self._iterator: Iterator[bytes] | None = None
        self._request_client: RequestClient | None = request_client

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        iterator = self._iterator
        if iterator is None:
            iterator = self._iterator = iter(self._response)
        try:
            return next(iterator)
        except StopIteration:
            raise
        except BaseException as exc:
            # A server that loses the body this way may never call close().
            self._close(exc)
            raise

    def close(self) -> None:
        """Close the application's iterable, then release the client."""
        self._close(None)

    def _close(self, exc: BaseException | None) -> None:
        request_client = self._request_client
        if request_client is None:
            return
        self._request_client = None
        # Close the iterable the application returned, not iter() of it: a
        # list's iterator has no close(), a generator is its own iterator,
        # and an object with both __iter__ and close() expects the latter.
        close = getattr(self._response, "close", None)
        try:
            if close is not None:
                close()
        except BaseException as close_exc:
            request_client.release(exc=exc if exc is not None else close_exc)
            raise
        request_client.release(exc=exc)


class PoolMiddleware:
    """Give each request a lazily reserved client at ``environ[environ_key]``.

    :param app: the WSGI application to wrap.
    :param pool: a :class:`~mcpool.ClientPool`, a
        :class:`~mcpool.ThreadMappedPool`, or any pool with ``reserve()``
        (see :class:`ReservingPool`).
        With a thread-mapped pool the request uses its thread's client, which
        stays bound to the thread after the response is closed.
    :param environ_key: where the :class:`RequestClient` goes in the environ.

    The middleware keeps nothing per request on itself: each call makes its
    own :class:`RequestClient`, so one instance serves any number of threads.

    >>> app.wsgi_app = PoolMiddleware(app.wsgi_app, pool)  # doctest: +SKIP
    """

    def __init__(
        self,
        app: WSGIApplication,
        pool: ReservingPool,
        environ_key: str = "mcpool.client",
    ) -> None:
        self.app = app
        self.pool = pool
        self.environ_key = environ_key

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        request_client = RequestClient(self.pool)
        environ[self.environ_key] = request_client
        try:
            response = self.app(environ, start_response)
        except BaseException as exc:
            request_client.release(exc=exc)
            raise
        return _ClosingResponse(response, request_client)
