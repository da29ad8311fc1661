"""CORS for the API (/v1/), so a browser app can call Engram with its user's token.

The end-user token section of the README is for apps that cannot hold a workspace key, a
browser app first; without CORS a page on another origin had its preflight answered 401
(no key: a preflight carries none) and every call blocked by the browser. For an origin in
ENGRAM_CORS_ALLOWED_ORIGINS (or `*`) a preflight is answered here, before any key is read, and
every answer carries Access-Control-Allow-Origin. Credentials (cookies) are never allowed: the
API's callers authenticate with a bearer, and the admin, which uses a session cookie, is not
under /v1/. Other origins, and every path outside /v1/, are served as before.

An ASGI wrapper around the whole application, so the chat gateway's own door
(completions.asgi) answers alike.
"""

from __future__ import annotations

from django.conf import settings

_PREFIX = "/v1/"
_METHODS = b"GET, POST, PATCH, DELETE, OPTIONS"
_MAX_AGE = b"600"


def _header(scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", ()) if k == name), None)


def _allowed(origin: bytes) -> bytes | None:
    """What Access-Control-Allow-Origin says for `origin`, or None: not allowed."""
    allowed = settings.ENGRAM_CORS_ALLOWED_ORIGINS
    if not allowed:
        return None
    if "*" in allowed:
        return b"*"
    try:
        text = origin.decode("ascii")
    except UnicodeDecodeError:
        return None
    return origin if text in allowed else None


def with_cors(app):
    async def application(scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").startswith(_PREFIX):
            return await app(scope, receive, send)
        origin = _header(scope, b"origin")
        allow = _allowed(origin) if origin is not None else None
        if allow is None:
            return await app(scope, receive, send)
        common = [(b"access-control-allow-origin", allow), (b"vary", b"Origin")]
        requested = _header(scope, b"access-control-request-method")
        if scope["method"] == "OPTIONS" and requested is not None:  # a preflight
            headers = [
                *common,
                (b"access-control-allow-methods", _METHODS),
                (b"access-control-max-age", _MAX_AGE),
                (b"content-length", b"0"),
            ]
            asked = _header(scope, b"access-control-request-headers")
            if asked:  # any header: authorization, x-workspace-id, the SDKs' x-stainless-*
                headers.append((b"access-control-allow-headers", asked))
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return None

        async def send_with_cors(message):
            if message["type"] == "http.response.start":
                # x-request-id, the rate-limit headers and retry-after, read by the SDKs
                extra = [*common, (b"access-control-expose-headers", b"*")]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return await app(scope, receive, send_with_cors)

    return application
