"""What a request's headers say of its body, refused before any of the body is read.

One rule for every door — the chat gateway's own (completions.asgi), /v1/models' and Django's
— applied by `with_body_headers_checked` around the whole ASGI application (config.asgi):
- a Content-Length over ENGRAM_MAX_REQUEST_BYTES (DATA_UPLOAD_MAX_MEMORY_SIZE, the limit of
  every route): 413 `request_too_large`. Django's ASGI handler read such a body up to the
  limit (20 MB by default) before the route's 413; a chunked body, with no length to refuse it
  by, is still counted as it arrives (config.asgi.BodyLengthHandler.read_body);
- a Content-Encoding other than identity: 415 `unsupported_media_type` naming it. Engram
  decodes no compressed body: a gzip one was parsed as JSON and refused as a 400
  `invalid_json`.

The refusal closes the connection (`connection: close`): the body it did not read would
otherwise be received whole and thrown away before the connection could take another request
(a 50 MB POST from `requests` to uvicorn over loopback had its 413 in 1-2 ms closed, in
11-17 ms kept open). A client that sent `Expect: 100-continue` sends none of it: uvicorn
answers 100 Continue only once the application reads.
"""

from __future__ import annotations

import json
import uuid

from config.common.errors import ApiError, request_too_large, unsupported_content_encoding
from config.common.middleware import _CLIENT_ID
from config.common.setting import setting

Headers = list[tuple[bytes, bytes]]  # an ASGI scope's: lower-case names, as sent
# More digits than any limit has: refused without int() (which refuses over 4,300 digits).
_LENGTH_DIGITS = 18


def _coding(value: bytes) -> str | None:
    """The first content coding of a Content-Encoding value that is not identity, or None."""
    for coding in value.decode("latin-1").split(","):
        coding = coding.strip()
        if coding and coding.lower() != "identity":
            return coding[:40]
    return None


def _joined(headers: Headers) -> dict[bytes, bytes]:
    """The headers by name, a repeated one's values joined by commas (RFC 9110 5.3)."""
    named: dict[bytes, bytes] = {}
    for name, value in headers:
        named[name] = named[name] + b"," + value if name in named else value
    return named


def body_headers_refusal(headers: Headers, limit: int | None) -> ApiError | None:
    """The 413 or 415 a request's headers earn its body (see the module docstring), or None.
    `limit` is the route's limit in bytes (None: none).

    ~12,700 instructions a request with an OpenAI SDK's 16 headers (callgrind; ~1.4 % of a
    JSON chat request's ~894,000, bench/README), ~10,600 of them the dict: the cheapest way
    found to look up three names (a list of the names and three scans of it ~12,900, a loop
    in Python ~10,100 before deciding anything)."""
    named = dict(headers)
    if len(named) != len(headers):  # a name sent twice: its values together
        named = _joined(headers)
    length = named.get(b"content-length")
    if (length is None or length == b"0") and b"transfer-encoding" not in named:
        return None  # no body
    encoding = named.get(b"content-encoding")
    if encoding is not None and (coding := _coding(encoding)) is not None:
        return unsupported_content_encoding(coding)
    if length is None or limit is None or not length.isdigit():
        return None  # chunked: counted as it arrives; a malformed length is uvicorn's 400
    if len(length) > _LENGTH_DIGITS or int(length) > limit:
        return request_too_large()
    return None


def with_body_headers_checked(app):
    """The ASGI application, answering a request whose headers refuse its body (see
    `body_headers_refusal`) before any door reads it."""

    async def application(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = scope["headers"]
        refused = body_headers_refusal(headers, setting("DATA_UPLOAD_MAX_MEMORY_SIZE"))
        if refused is None:
            return await app(scope, receive, send)
        return await send_refusal(send, refused, headers)

    return application


async def send_refusal(send, error: ApiError, headers: Headers) -> None:
    """`error`'s envelope, with the request's x-request-id (the client's, when it sent a sane
    one), closing the connection: nothing of the body is read."""
    incoming = next((v for k, v in headers if k == b"x-request-id"), b"").decode("latin-1")
    request_id = incoming if _CLIENT_ID.match(incoming) else f"req_{uuid.uuid4().hex}"
    payload = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"x-request-id", request_id.encode()),
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(payload)),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
