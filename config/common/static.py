"""Static files (the admin's CSS and JS) from the process itself, in every mode: WhiteNoise.

WhiteNoise's middleware is sync-only; one sync middleware in the chain would make Django run
every view below it through async_to_sync, off the event loop the API views and their
background tasks use. This subclass keeps the chain async: a path that is not a static file
costs one dict lookup, and a static file is read in a worker thread (admin files are small,
so it is served whole rather than as a file stream, which Django's ASGI handler would buffer
with a warning anyway).
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, **kwargs) -> None:
        super().__init__(get_response, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest):
        path = request.path_info
        if not path.startswith(self.static_prefix):
            return await self.get_response(request)
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(path)
        else:
            static_file = self.files.get(path)
        if static_file is None:
            return await self.get_response(request)
        return await sync_to_async(_whole, thread_sensitive=False)(static_file, request)


def _whole(static_file, request: HttpRequest) -> HttpResponse:
    served = static_file.get_response(request.method, request.META)
    body = b""
    if served.file is not None:
        with served.file as f:
            body = f.read()
    response = HttpResponse(body, status=int(served.status))
    del response["Content-Type"]  # WhiteNoise's headers name the type
    for key, value in served.headers:
        response[key] = value
    return response
