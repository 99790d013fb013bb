"""Answer 503 with Retry-After when the cache pool's line is full."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

import mcpool


class CacheOverload:
    """Turn :class:`mcpool.TooManyRequests` (``POOL["max_waiting"]``) into a
    503 that tells the client when to try again, instead of a 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        if isinstance(exception, mcpool.TooManyRequests):
            response = HttpResponse("busy, try again\n", status=503)
            response["Retry-After"] = "1"
            return response
        return None
