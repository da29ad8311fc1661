"""What a request's headers say of its body, refused before any of the body is read.

One rule (`body_refusal`, on the headers as config.common.middleware.request_headers reads
them) for every door, before its key is checked: the chat gateway's (completions.asgi's
CompletionsApp), /v1/models' and Django's (completions.asgi.with_gateway, which routes them):
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


def body_refusal(headers: dict[str, str], limit: int | None) -> ApiError | None:
    """The 413 or 415 a request's headers (config.common.middleware.request_headers) earn its
    body (see the module docstring), or None. `limit` is the route's limit in bytes (None:
    none)."""
    length, encoding = headers.get("content-length"), headers.get("content-encoding")
    chunked = "transfer-encoding" in headers
    if (length is None or length == "0") and not chunked:
        return None  # no body
    if encoding is not None and (coding := _coding(encoding)) is not None:
        return unsupported_content_encoding(coding)
    if length is None or limit is None or not length.isdigit():
        return None  # chunked: counted as it arrives; a malformed length is uvicorn's 400
    if len(length) > _LENGTH_DIGITS or int(length) > limit:
        return request_too_large()
    return None


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
