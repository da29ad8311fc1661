"""Request id and the error envelope, for every response (async-capable, no thread hops)."""

from __future__ import annotations

import logging
import os
import re
from itertools import count

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from config.common.errors import EDGE_ERRORS, api_error, error_response
from config.common.logging import request_id_var

logger = logging.getLogger("engram.request")

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# New ids: a random per-process prefix and a counter, as unique as uuid4 across processes and
# cheaper (no syscall per request).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = count(int.from_bytes(os.urandom(4), "big"))


def request_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """An ASGI scope's headers by name, as Django's ASGIRequest reads them (its META): a
    repeated name's values joined by commas, so every door answers a request alike — a
    repeated Engram header is no id (a 400 naming it) and a second Authorization is no key.
    The dict of the last values let a second `x-user-id` or `Authorization` win in the chat
    door and be refused in Django's."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
    if len(headers) == len(raw):
        return headers
    headers = {}
    for key, value in raw:
        name, text = key.decode("latin-1"), value.decode("latin-1")
        headers[name] = f"{headers[name]},{text}" if name in headers else text
    return headers


def request_id_for(incoming: str) -> str:
    """A response's x-request-id: the client's, when it sent a sane one, else a new one."""
    if _CLIENT_ID.match(incoming):
        return incoming
    return f"req_{_ID_PREFIX}{next(_ID_COUNTER):016x}"


_STATUS_MESSAGES = {
    400: "Bad request.",
    401: "Unauthorized.",
    403: "Permission denied.",
    404: "Not found.",
    405: "Method not allowed.",
    413: "Request body too large.",
    415: "Unsupported media type.",
    500: "Internal server error.",
}


class AsyncCapable:
    """A middleware that runs sync or async, as the chain around it does (Django's recipe)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):  # each subclass answers, sync or async
        raise NotImplementedError


class _Middleware(AsyncCapable):
    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        self.before(request)
        return self.after(request, self.get_response(request))

    async def __acall__(self, request):
        self.before(request)
        return self.after(request, await self.get_response(request))

    def before(self, request: HttpRequest) -> None:
        pass

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response


class RequestIdMiddleware(_Middleware):
    """Every response carries x-request-id (the client's, when it sent a sane one)."""

    def before(self, request):
        request.request_id = request_id_for(request.headers.get("x-request-id", ""))
        request_id_var.set(request.request_id)

    def after(self, request, response):
        response["x-request-id"] = request.request_id
        return response


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith(("application/json", "text/event-stream"))


class ErrorEnvelopeMiddleware(_Middleware):
    """Turns any non-JSON error (Django's 404/405/413 pages, empty 405s) into the envelope, and
    a domain error or DoesNotExist escaping a plain Django view into its envelope (api_error)."""

    def process_exception(self, request, exception):
        if not isinstance(exception, EDGE_ERRORS):
            return None  # Django's own handling: a 500 envelope via handler500
        match = request.resolver_match
        return api_error(exception, url_kwargs=match.kwargs if match else None).response()

    def after(self, request, response):
        if response.status_code < 400 or request.path.startswith("/admin/"):
            return response
        if getattr(response, "streaming", False) or _is_json(response):
            return response
        status = response.status_code
        converted = error_response(
            status, _STATUS_MESSAGES.get(status, "Request failed."), code=_code(status)
        )
        for header in ("Allow", "Retry-After"):
            if header in response:
                converted[header] = response[header]
        return converted


def _code(status: int) -> str | None:
    return {
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
        415: "unsupported_media_type",
    }.get(status)
