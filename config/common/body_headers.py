"""What a request's headers say of its body, refused before any of the body is read.

One rule (`body_refusal`) for every door, before its key is checked: the chat gateway's own
with the header dict it builds (completions.asgi.CompletionsApp), /v1/models' and Django's
through `body_headers_refusal` (completions.asgi.with_gateway, which routes them all):
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

from config.common.errors import ApiError, request_too_large, unsupported_content_encoding
from config.common.middleware import request_id_for

Headers = list[tuple[bytes, bytes]]  # an ASGI scope's: lower-case names, as sent
# More digits than any limit has: refused without int() (which refuses over 4,300 digits).
_LENGTH_DIGITS = 18


def _coding(value: str) -> str | None:
    """The first content coding of a Content-Encoding value that is not identity, or None."""
    for coding in value.split(","):
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


def body_refusal(
    *, length: str | None, encoding: str | None, chunked: bool, limit: int | None
) -> ApiError | None:
    """The 413 or 415 a request's headers earn its body (see the module docstring), or None:
    the one rule, given the values of its Content-Length, Content-Encoding (a repeated
    header's values joined by commas) and whether it has a Transfer-Encoding. `limit` is the
    route's limit in bytes (None: none). The chat door reads the three from the header dict it
    builds anyway (completions.asgi); every other door through `body_headers_refusal`."""
    if (length is None or length == "0") and not chunked:
        return None  # no body
    if encoding is not None and (coding := _coding(encoding)) is not None:
        return unsupported_content_encoding(coding)
    if length is None or limit is None or not length.isdigit():
        return None  # chunked: counted as it arrives; a malformed length is uvicorn's 400
    if len(length) > _LENGTH_DIGITS or int(length) > limit:
        return request_too_large()
    return None


def body_headers_refusal(headers: Headers, limit: int | None) -> ApiError | None:
    """`body_refusal` of an ASGI scope's headers.

    ~12,700 instructions a request with an OpenAI SDK's 16 headers (callgrind), ~10,600 of
    them the dict: the cheapest way found to look up three names (a list of the names and
    three scans of it ~12,900, a loop in Python ~10,100 before deciding anything). The chat
    door, ~1.4 % of whose ~894,000 instructions that would be, does not pay it."""
    named = dict(headers)
    if len(named) != len(headers):  # a name sent twice: its values together
        named = _joined(headers)
    length, encoding = named.get(b"content-length"), named.get(b"content-encoding")
    return body_refusal(
        length=None if length is None else length.decode("latin-1"),
        encoding=None if encoding is None else encoding.decode("latin-1"),
        chunked=b"transfer-encoding" in named,
        limit=limit,
    )


async def send_refusal(send, error: ApiError, head: Headers) -> None:
    """`error`'s envelope after `head` (the response's x-request-id), closing the connection:
    nothing of the body is read."""
    payload = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                *head,
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(payload)),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def request_id_head(headers: Headers) -> Headers:
    """The x-request-id of a response to these request headers: the client's, when it sent a
    sane one, else a new one."""
    incoming = next((v for k, v in headers if k == b"x-request-id"), b"").decode("latin-1")
    return [(b"x-request-id", request_id_for(incoming).encode())]
