"""uvicorn's HTTP/1.1 protocol (httptools) with one change: a request its parser refuses is
answered in OpenAI's error envelope, as every other bad input is.

A control character in a header value (`x-user-id: u\\x01`), a malformed request line or
header, a bad chunk size: httptools stops parsing and uvicorn answers before the ASGI app is
called, with a plain-text body ("Invalid HTTP request received."). An SDK that reads errors
as `{"error": {...}}` then reports an unparsable body instead of the reason. Here the same 400
(and, as uvicorn does, the connection closed: the stream can no longer be framed) carries the
envelope. Used by every web process (`config.web`).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from config.common.errors import error_body

INVALID_HTTP = json.dumps(
    error_body(
        "The request is not valid HTTP/1.1: a malformed request line, a header name or value "
        "with a control character (such as NUL), or a bad body framing.",
        type="invalid_request_error",
        code="invalid_http",
    )
).encode()


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(INVALID_HTTP)).encode() + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                INVALID_HTTP,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
