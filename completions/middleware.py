"""The loop guard at the Django doors: before the key check, as the lean ASGI door does."""

from __future__ import annotations

from completions.providers import hops
from config.common.middleware import AsyncCapable


class LoopGuardMiddleware(AsyncCapable):
    """A request carrying this Engram's own `x-engram-hop` mark is 400 at once (see hops)."""

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
