"""ALLOWED_HOSTS, checked before anything else reads the request.

Django validates the Host header only when something calls `request.get_host()`: its
CommonMiddleware and CSRF do, late in the chain. ApiKeyMiddleware answers /v1/ before them (a
401 for a missing key), and the chat gateway's own ASGI door (completions.asgi) and its
/v1/models handler run none of them: a request to the API with a forged Host was answered
401, or 200 with a key, where Django answers 400 (its docs: ALLOWED_HOSTS guards against
HTTP Host header attacks; a disallowed host raises DisallowedHost, a 400). So the check runs
first: `with_allowed_hosts` around the whole ASGI application (every door), and
`AllowedHostMiddleware` first in Django's chain after the request id and the envelope (the
WSGI application and Django's test client). The refusal is the envelope's 400
`disallowed_host`, logged as Django logs it (logger `django.security.DisallowedHost`); at the
ASGI door it closes the connection without reading the body (`Connection: close`).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http.request import split_domain_port, validate_host

from config.common.body_headers import send_refusal
from config.common.errors import ApiError
from config.common.middleware import AsyncCapable, request_id_for

security_logger = logging.getLogger("django.security.DisallowedHost")

# Django's own fallback (HttpRequest.get_host) when DEBUG is on and ALLOWED_HOSTS is empty.
_DEBUG_HOSTS = (".localhost", "127.0.0.1", "[::1]")


def disallowed_host() -> ApiError:
    return ApiError(
        400,
        "Invalid Host header: this server does not serve that host name.",
        code="disallowed_host",
    )


def host_allowed(host: str) -> bool:
    """Whether `host` (a Host header's value, port included) is one ALLOWED_HOSTS serves, as
    HttpRequest.get_host decides."""
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = list(_DEBUG_HOSTS)
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


# Each host name's verdict, for the ASGI check: 8.2 µs a request computed, 2.1 µs cached (the
# header's scan included; 2 cores at load 9), kept while ALLOWED_HOSTS is the same list; a
# bounded number of names, so forged ones cannot grow it.
_verdicts: dict[str, bool] = {}
_verdicts_of: list[object] = [None]
_MAX_VERDICTS = 256


def _host_allowed_cached(host: str) -> bool:
    hosts = settings.ALLOWED_HOSTS
    if _verdicts_of[0] is not hosts:
        _verdicts.clear()
        _verdicts_of[0] = hosts
    verdict = _verdicts.get(host)
    if verdict is None:
        verdict = host_allowed(host)
        if len(_verdicts) < _MAX_VERDICTS:
            _verdicts[host] = verdict
    return verdict


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value
    return None


def _scope_host(scope) -> str:
    """The host a Django request made of `scope` would name (HttpRequest._get_raw_host)."""
    forwarded = _header(scope, b"x-forwarded-host") if settings.USE_X_FORWARDED_HOST else None
    host = forwarded if forwarded is not None else _header(scope, b"host")
    if host is not None:
        return host.decode("latin-1")
    server = scope.get("server")
    if not server:
        return "unknown"  # as ASGIRequest's SERVER_NAME without one
    name, port = server[0], str(server[1])
    return name if port in ("80", "443", "None") else f"{name}:{port}"


def with_allowed_hosts(app):
    """The ASGI application, refusing an HTTP request whose host ALLOWED_HOSTS does not serve
    before any door reads it."""

    async def application(scope, receive, send):
        if scope["type"] != "http" or settings.ALLOWED_HOSTS == ["*"]:
            return await app(scope, receive, send)
        host = _scope_host(scope)
        if _host_allowed_cached(host):
            return await app(scope, receive, send)
        security_logger.error("Invalid HTTP_HOST header: %r.", host[:200])
        request_id = request_id_for((_header(scope, b"x-request-id") or b"").decode("latin-1"))
        # the connection closed, its body unread: a request for a host this server does not
        # serve gets no more of its time, nor a kept-alive connection for the next one
        await send_refusal(send, disallowed_host(), [(b"x-request-id", request_id.encode())])

    return application


class AllowedHostMiddleware(AsyncCapable):
    """Django's host validation, before the API key is read (see the module's docstring)."""

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        refused = _refused(request)
        return refused if refused is not None else self.get_response(request)

    async def __acall__(self, request):
        refused = _refused(request)
        return refused if refused is not None else await self.get_response(request)


def _refused(request):
    try:
        request.get_host()
    except DisallowedHost as exc:
        security_logger.error(str(exc))
        return disallowed_host().response()
    return None
