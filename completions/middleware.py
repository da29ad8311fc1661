"""The loop guard at the Django doors: before the key check, as the lean ASGI door does."""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from completions.providers import hops


class LoopGuardMiddleware:
    """A request carrying this Engram's own `x-engram-hop` mark is 400 at once (see hops)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        error = hops.refused(request.headers.get(hops.HEADER))
        if error is not None:
            return error.response()
        return self.get_response(request)

    async def __acall__(self, request):
        error = hops.refused(request.headers.get(hops.HEADER))
        if error is not None:
            return error.response()
        return await self.get_response(request)
